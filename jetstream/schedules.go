package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/workflow"
)

// Schedules (docs/schedules.md). Each schedule of a workflow's latest
// definition is one repeating message schedule (nats-server 2.12+) on
// its own subject, jetflow.schedule.<workflow>.<schedule>, in
// StreamSchedules. The server fires it: every fire stores one message on
// jetflow.fire.<workflow>.<schedule> in the same stream, carrying the
// schedule's headers and the server's Nats-Schedule-Next; dispatchers
// consume the fires. Nothing in jetflow runs a scheduler loop.

// Schedule headers. The server copies them from the schedule to each
// fire (it strips only Nats-Schedule*), so a fire carries the pattern it
// was fired by.
const (
	HeaderScheduleName = "Jetflow-Schedule"
	HeaderScheduleCron = "Jetflow-Schedule-Cron"
	HeaderScheduleZone = "Jetflow-Schedule-Zone"
	// HeaderScheduleManual marks a fire published by jetflow schedule
	// trigger: its value is the trigger time (RFC 3339, nanoseconds).
	HeaderScheduleManual = "Jetflow-Schedule-Manual"
	// HeaderScheduleRemoved marks the message that replaced a removed
	// schedule (a plain message on a schedule subject ends its schedule).
	HeaderScheduleRemoved = "Jetflow-Schedule-Removed"
	// HeaderScheduleFireNext keeps, on the dead letter of a fire, the
	// server's Nats-Schedule-Next of that fire (a dead letter keeps no
	// Nats-* header, and no client may publish Nats-Schedule-Next): a
	// replay of the dead letter (Nats-Msg-Id "replay/<seq>") carries it,
	// so it names the fire time, hence the instance, the fire named.
	HeaderScheduleFireNext = "Jetflow-Schedule-Fire-Next"
	headerScheduleNext     = "Nats-Schedule-Next"
	headerScheduleTZ       = "Nats-Schedule-Time-Zone"
	headerScheduleTTL      = "Nats-Schedule-TTL"
	headerRollup           = "Nats-Rollup"
)

// FireTTL is how long a fire waits for a dispatcher: a fire not consumed
// within it (every dispatcher down) expires, so dispatchers that come
// back do not start an hour-old backlog of fires.
const FireTTL = workflow.FireTTL

// ScheduleSubject is the subject of a schedule's message schedule.
func ScheduleSubject(workflowName, schedule string) string {
	return schedulePrefix + workflowName + "." + schedule
}

// FireSubject is where the fires of a schedule are stored.
func FireSubject(workflowName, schedule string) string {
	return firePrefix + workflowName + "." + schedule
}

// ScheduleKey is the schedules bucket key of a schedule.
func ScheduleKey(workflowName, schedule string) string { return workflowName + "." + schedule }

// ParseFireSubject reads the workflow and schedule from a fire subject.
func ParseFireSubject(subject string) (workflowName, schedule string, ok bool) {
	rest, ok := strings.CutPrefix(subject, firePrefix)
	if !ok {
		return "", "", false
	}
	workflowName, schedule, ok = strings.Cut(rest, ".")
	if !ok || workflow.ValidateName("workflow name", workflowName) != nil || workflow.ValidateName("schedule name", schedule) != nil {
		return "", "", false
	}
	return workflowName, schedule, true
}

func (c *Client) schedulesStreamConfig() natsjs.StreamConfig {
	return natsjs.StreamConfig{
		Name:        StreamSchedules,
		Description: "jetflow: schedules of workflows (message schedules) and their fires",
		Subjects:    []string{ScheduleSubjects, FireSubjects},
		Retention:   natsjs.WorkQueuePolicy,
		Storage:     natsjs.FileStorage,
		Replicas:    max(c.cfg.Replicas, 1),
		Duplicates:  c.cfg.DuplicateWindow,
		// Schedules rule out DiscardNew; rollups replace a schedule in
		// one write; fires carry a TTL (FireTTL).
		AllowMsgSchedules: true,
		AllowRollup:       true,
		AllowMsgTTL:       true,
		MaxMsgSize:        int32(c.cfg.MaxPayload + 4096),
	}
}

func schedulesBucketConfig(replicas int) natsjs.KeyValueConfig {
	return natsjs.KeyValueConfig{Bucket: BucketSchedules, Description: "jetflow: state of each schedule (last run, paused), CAS-updated", History: 1, Replicas: replicas, Storage: natsjs.FileStorage}
}

func scheduleConsumerConfig(ackWait time.Duration) natsjs.ConsumerConfig {
	return natsjs.ConsumerConfig{
		Durable:       ConsumerDispatcher,
		Description:   "jetflow dispatchers: fires of schedules (shared by all replicas)",
		FilterSubject: FireSubjects,
		AckPolicy:     natsjs.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxAckPending: 1000,
		MaxDeliver:    -1,
	}
}

// provisionSchedules makes the schedules stream, its dispatcher
// consumer and the schedules bucket.
func (c *Client) provisionSchedules(ctx context.Context) error {
	cc := scheduleConsumerConfig(c.cfg.DispatcherAckWait)
	if cons, err := c.js.Consumer(ctx, StreamSchedules, cc.Durable); err == nil && sameConsumer(cons.CachedInfo().Config, cc) {
		return nil
	}
	if _, err := c.js.CreateOrUpdateConsumer(ctx, StreamSchedules, cc); err != nil {
		return fmt.Errorf("provision consumer %s on %s: %w", ConsumerDispatcher, StreamSchedules, err)
	}
	return nil
}

func (c *Client) schedulesBucket(ctx context.Context) (*bucket, error) {
	c.scheds.mu.Lock()
	defer c.scheds.mu.Unlock()
	if c.scheds.b != nil {
		return c.scheds.b, nil
	}
	b, err := c.bindBucket(ctx, BucketSchedules)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w (schedules need a dispatcher of this version to provision it)", BucketSchedules, err)
	}
	c.scheds.b = b
	return b, nil
}

// ScheduleState reads a schedule's state and its revision (0 and a zero
// state when it has none yet).
func (c *Client) ScheduleState(ctx context.Context, workflowName, schedule string) (workflow.ScheduleState, uint64, error) {
	var st workflow.ScheduleState
	b, err := c.schedulesBucket(ctx)
	if err != nil {
		return st, 0, err
	}
	e, err := c.get(ctx, b, ScheduleKey(workflowName, schedule))
	if errors.Is(err, natsjs.ErrKeyNotFound) || errors.Is(err, natsjs.ErrKeyDeleted) {
		return st, 0, nil
	}
	if err != nil {
		return st, 0, fmt.Errorf("read schedule %s/%s: %w", workflowName, schedule, translate(err))
	}
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		// A record jetflow cannot read is replaced by the next write.
		c.log.Warn().Err(err).Str("workflow", workflowName).Str("schedule", schedule).Msg("unreadable schedule state; starting from an empty one")
		return workflow.ScheduleState{}, e.Revision(), nil
	}
	return st, e.Revision(), nil
}

// PutScheduleState writes a schedule's state if its revision is still
// rev (0: if it has none). A lost race returns an error matching
// workflow.ErrConflict.
func (c *Client) PutScheduleState(ctx context.Context, workflowName, schedule string, st workflow.ScheduleState, rev uint64) (uint64, error) {
	b, err := c.schedulesBucket(ctx)
	if err != nil {
		return 0, err
	}
	v, err := json.Marshal(st)
	if err != nil {
		return 0, err
	}
	key := ScheduleKey(workflowName, schedule)
	var newRev uint64
	err = c.bounded(ctx, func(ctx context.Context) error {
		if rev == 0 {
			newRev, err = b.kv().Create(ctx, key, v)
			if errors.Is(err, natsjs.ErrKeyExists) {
				return fmt.Errorf("%w: %v", workflow.ErrConflict, err)
			}
			return err
		}
		newRev, err = b.kv().Update(ctx, key, v, rev)
		return err
	}, keySubject(BucketSchedules, key))
	if err != nil {
		return 0, fmt.Errorf("write schedule %s/%s: %w", workflowName, schedule, translate(err))
	}
	return newRev, nil
}

// InstalledSchedule is a schedule as the server holds it.
type InstalledSchedule struct {
	Workflow, Name, Cron, Zone string
	// Removed: the schedule was removed (its subject holds the marker).
	Removed bool
	seq     uint64
}

// InstalledSchedules lists the schedules stored for a workflow ("" for
// every workflow), removed ones included.
func (c *Client) InstalledSchedules(ctx context.Context, workflowName string) ([]InstalledSchedule, error) {
	// One token per schedule name: debounce timers live one level deeper.
	filter := schedulePrefix + "*.*"
	if workflowName != "" {
		filter = schedulePrefix + workflowName + ".*"
	}
	var subjects []string
	err := c.bounded(ctx, func(ctx context.Context) error {
		st, err := c.js.Stream(ctx, StreamSchedules)
		if err != nil {
			return err
		}
		info, err := st.Info(ctx, natsjs.WithSubjectFilter(filter))
		if err != nil {
			return err
		}
		for s := range info.State.Subjects {
			subjects = append(subjects, s)
		}
		return nil
	}, APIStreamInfo(StreamSchedules))
	if err != nil {
		return nil, fmt.Errorf("list schedules: %w", err)
	}
	slices.Sort(subjects)
	out := make([]InstalledSchedule, 0, len(subjects))
	for _, s := range subjects {
		is, err := c.installedSchedule(ctx, s)
		if err != nil {
			return nil, err
		}
		if is != nil {
			out = append(out, *is)
		}
	}
	return out, nil
}

func (c *Client) installedSchedule(ctx context.Context, subject string) (*InstalledSchedule, error) {
	rest, _ := strings.CutPrefix(subject, schedulePrefix)
	wf, name, _ := strings.Cut(rest, ".")
	var m *natsjs.RawStreamMsg
	err := c.bounded(ctx, func(ctx context.Context) error {
		st, err := c.js.Stream(ctx, StreamSchedules)
		if err != nil {
			return err
		}
		m, err = st.GetLastMsgForSubject(ctx, subject)
		return err
	}, readSubjects(StreamSchedules)...)
	if errors.Is(err, natsjs.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read schedule %s: %w", subject, err)
	}
	return &InstalledSchedule{
		Workflow: wf, Name: name, seq: m.Sequence,
		Cron: m.Header.Get(natsjs.ScheduleHeader), Zone: m.Header.Get(headerScheduleTZ),
		Removed: m.Header.Get(natsjs.ScheduleHeader) == "",
	}, nil
}

// SyncSchedules makes the server hold exactly the schedules of def (the
// latest definition of its workflow): a schedule that is missing or
// differs is (re)installed, one that def no longer has is removed. Each
// change replaces the subject's message (a rollup) only if the subject
// is still as read, so dispatchers that sync at once agree; a schedule
// already as def has it is left alone, so its timing is not reset.
func (c *Client) SyncSchedules(ctx context.Context, def *workflow.Definition) error {
	have, err := c.InstalledSchedules(ctx, def.Name)
	if err != nil {
		return err
	}
	byName := map[string]InstalledSchedule{}
	for _, h := range have {
		byName[h.Name] = h
	}
	var errs []error
	for i := range def.Schedules {
		s := &def.Schedules[i]
		h, ok := byName[s.Name]
		delete(byName, s.Name)
		if ok && !h.Removed && h.Cron == s.Cron && h.Zone == s.Timezone {
			continue
		}
		if err := c.installSchedule(ctx, def.Name, s, h.seq); err != nil {
			errs = append(errs, err)
		}
	}
	for _, h := range byName {
		if h.Removed {
			continue
		}
		if err := c.removeSchedule(ctx, def.Name, h.Name, h.seq); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (c *Client) installSchedule(ctx context.Context, workflowName string, s *workflow.Schedule, seq uint64) error {
	subject := ScheduleSubject(workflowName, s.Name)
	m := &nats.Msg{Subject: subject, Header: nats.Header{}}
	m.Header.Set(natsjs.ScheduleHeader, s.Cron)
	m.Header.Set(natsjs.ScheduleTargetHeader, FireSubject(workflowName, s.Name))
	if s.Timezone != "" {
		m.Header.Set(headerScheduleTZ, s.Timezone)
	}
	m.Header.Set(headerScheduleTTL, FireTTL.String())
	m.Header.Set(HeaderScheduleName, s.Name)
	m.Header.Set(HeaderScheduleCron, s.Cron)
	m.Header.Set(HeaderScheduleZone, s.Timezone)
	m.Header.Set(headerRollup, "sub")
	_, err := c.publishMsg(ctx, m, natsjs.WithExpectLastSequencePerSubject(seq))
	if isWrongLastSeq(err) {
		return nil // another dispatcher changed it first; it syncs from the same definition
	}
	if err != nil {
		return fmt.Errorf("install schedule %s of %s: %w", s.Name, workflowName, err)
	}
	return nil
}

func (c *Client) removeSchedule(ctx context.Context, workflowName, schedule string, seq uint64) error {
	// A plain message on a schedule's subject ends the schedule; the
	// rollup removes the schedule message itself.
	m := &nats.Msg{Subject: ScheduleSubject(workflowName, schedule), Header: nats.Header{}}
	m.Header.Set(HeaderScheduleRemoved, "true")
	m.Header.Set(headerRollup, "sub")
	_, err := c.publishMsg(ctx, m, natsjs.WithExpectLastSequencePerSubject(seq))
	if isWrongLastSeq(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove schedule %s of %s: %w", schedule, workflowName, err)
	}
	return nil
}

func isWrongLastSeq(err error) bool {
	var ae *natsjs.APIError
	return errors.As(err, &ae) && (ae.ErrorCode == 10071 || ae.ErrorCode == 10164)
}

// TriggerSchedule publishes a manual fire of a schedule, fired at t.
func (c *Client) TriggerSchedule(ctx context.Context, workflowName, schedule string, t time.Time) error {
	m := &nats.Msg{Subject: FireSubject(workflowName, schedule), Header: nats.Header{}}
	m.Header.Set(HeaderScheduleName, schedule)
	m.Header.Set(HeaderScheduleManual, t.UTC().Format(time.RFC3339Nano))
	if _, err := c.publishMsg(ctx, m); err != nil {
		return fmt.Errorf("trigger schedule %s of %s: %w", schedule, workflowName, err)
	}
	return nil
}

// FireOf reads a fire message: the schedule's pattern and zone as
// installed, and the server's next fire time, or the time of a manual
// trigger. A fire published by a client (it has a Nats-Msg-Id) is one
// only as a replay of a fire's dead letter (jetflow dlq replay): then
// the next fire time is the one the dead letter kept
// (HeaderScheduleFireNext), so the replay names the same fire.
func FireOf(m Delivery) (cron, zone string, next time.Time, manual time.Time, err error) {
	return fireOf(m.Header)
}

func fireOf(header func(string) string) (cron, zone string, next time.Time, manual time.Time, err error) {
	if v := header(HeaderScheduleManual); v != "" {
		manual, err = time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return "", "", time.Time{}, time.Time{}, fmt.Errorf("manual fire time %q: %v", v, err)
		}
		return "", "", time.Time{}, manual, nil
	}
	cron, zone = header(HeaderScheduleCron), header(HeaderScheduleZone)
	name, v := headerScheduleNext, header(headerScheduleNext)
	if id := header(natsjs.MsgIDHeader); id != "" {
		// Only the server publishes Nats-Schedule-Next, and never with a
		// message id; a replayed dead letter carries the kept one.
		if !strings.HasPrefix(id, replayMsgIDPrefix) {
			return "", "", time.Time{}, time.Time{}, fmt.Errorf("not a fire of a jetflow schedule: it has a %s (%q); the server's fires have none", natsjs.MsgIDHeader, id)
		}
		name, v = HeaderScheduleFireNext, header(HeaderScheduleFireNext)
	}
	if cron == "" || v == "" {
		return "", "", time.Time{}, time.Time{}, fmt.Errorf("not a fire of a jetflow schedule: %s %q, %s %q", HeaderScheduleCron, cron, name, v)
	}
	if v == "purge" {
		return "", "", time.Time{}, time.Time{}, errors.New("fire of a one-shot schedule: jetflow schedules repeat")
	}
	next, err = time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return "", "", time.Time{}, time.Time{}, fmt.Errorf("%s %q: %v", name, v, err)
	}
	return cron, zone, next, time.Time{}, nil
}

// SetSchedulePaused pauses or resumes a schedule: its state's Paused,
// written by compare-and-swap. A paused schedule's fires are skipped
// (workflow.DecideFire); the server keeps firing, so resuming needs no
// change on the server and the timing stays.
func (c *Client) SetSchedulePaused(ctx context.Context, workflowName, schedule string, paused bool) error {
	for range 20 {
		st, rev, err := c.ScheduleState(ctx, workflowName, schedule)
		if err != nil {
			return err
		}
		if st.Paused == paused {
			return nil
		}
		st.Paused = paused
		_, err = c.PutScheduleState(ctx, workflowName, schedule, st, rev)
		if errors.Is(err, workflow.ErrConflict) {
			continue
		}
		return err
	}
	return fmt.Errorf("schedule %s of %s: too many conflicts", schedule, workflowName)
}
