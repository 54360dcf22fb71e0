package jetstream

import (
	"context"
	"fmt"
	"strings"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"
)

// The timer subjects (jetflow.timer.>) are captured by StreamEvents, a
// work-queue stream, because a message schedule must target a subject of
// its own stream. The dispatcher consumes only the event subjects there,
// so a plain message published on a timer subject — not a schedule — was
// kept for good: nothing consumed it, and no stream limit applies to a
// work queue that holds durable timers. NATS has no setting that admits
// only schedules on a subject (a subject transform moves every message
// alike, and MaxAge would also expire jetflow's own timers), so a
// consumer does it: the timer guard sees every message stored on a timer
// subject once; a jetflow schedule it leaves alone, asking to see it
// again only if it is still there well after it should have fired;
// anything else it dead-letters (source "timer") and removes.

// timerGuardAckWait is how soon a guard delivery whose dispatcher died is
// seen again.
const timerGuardAckWait = time.Minute

// timerGuardLate is how long after its time a schedule that is still
// stored is looked at again (the next look finds it fired and gone, or
// due again).
const timerGuardLate = time.Minute

func timerGuardConfig() natsjs.ConsumerConfig {
	return natsjs.ConsumerConfig{
		Durable:       ConsumerTimerGuard,
		Description:   "jetflow dispatchers: dead-letter what is not a timer schedule on timer subjects",
		FilterSubject: TimerSubjects,
		AckPolicy:     natsjs.AckExplicitPolicy,
		AckWait:       timerGuardAckWait,
		MaxAckPending: -1, // schedules are held (never acked: that would delete them)
		MaxDeliver:    -1,
	}
}

// timerSchedule reports when a message on a timer subject fires, if it
// is a schedule jetflow publishes: "@at" a time, targeting the event
// subject of the instance its subject names.
func timerSchedule(subject string, schedule, target string) (time.Time, bool) {
	tokens := strings.Split(subject, ".")
	if len(tokens) != 4 || tokens[0]+"."+tokens[1]+"." != timerPrefix || target != EventSubject(tokens[2]) {
		return time.Time{}, false
	}
	at, ok := strings.CutPrefix(schedule, "@at ")
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, at)
	return t, err == nil
}

// GuardTimerSubjects runs the timer guard until the subscription is
// stopped: every message on a timer subject that is not a jetflow timer
// schedule is dead-lettered with the reason and removed, and reported to
// rejected. Dispatchers run it; ctx bounds the dead-lettering too, so it
// must last as long as the subscription.
func (c *Client) GuardTimerSubjects(ctx context.Context, rejected func(subject, reason string)) (*Subscription, error) {
	cons, err := c.js.Consumer(ctx, StreamEvents, ConsumerTimerGuard)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", ConsumerTimerGuard, StreamEvents, err)
	}
	cc, err := cons.Consume(func(nm natsjs.Msg) {
		h := nm.Headers()
		if at, ok := timerSchedule(nm.Subject(), h.Get(natsjs.ScheduleHeader), h.Get(natsjs.ScheduleTargetHeader)); ok {
			_ = nm.NakWithDelay(max(time.Until(at), 0) + timerGuardLate)
			return
		}
		reason := fmt.Sprintf("%s is a jetflow timer subject: only the dispatcher's timer schedules (@at, targeting %s) belong there", nm.Subject(), EventSubject("<instance>"))
		if s := h.Get(natsjs.ScheduleHeader); s != "" {
			reason += fmt.Sprintf("; this is a schedule %q targeting %q", s, h.Get(natsjs.ScheduleTargetHeader))
		}
		m := &Msg{m: nm, c: c}
		dctx, cancel := context.WithTimeout(ctx, 2*c.cfg.RequestTimeout)
		defer cancel()
		if err := c.DeadLetter(dctx, "timer", m, "dispatcher", reason); err != nil {
			c.log.Warn().Err(err).Str("subject", nm.Subject()).Msg("cannot dead-letter a message on a timer subject; will retry")
			_ = nm.NakWithDelay(time.Second)
			return
		}
		_ = nm.TermWithReason(reason)
		if rejected != nil {
			rejected(nm.Subject(), reason)
		}
	}, natsjs.PullMaxMessages(64), natsjs.PullExpiry(pullExpiry), natsjs.PullHeartbeat(pullHeartbeat))
	if err != nil {
		return nil, fmt.Errorf("consume %s on %s: %w", ConsumerTimerGuard, StreamEvents, err)
	}
	return &Subscription{cc: cc}, nil
}
