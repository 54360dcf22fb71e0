package worker

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/rs/zerolog"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// publishTimeout bounds the NATS calls around one task.
const publishTimeout = 30 * time.Second

// execute runs one task message: decode, load input, run the handler with
// heartbeats, store the output, publish the result, ack. This is the one
// place where a handler's outcome becomes a result and an ack, nak or term.
func (w *Worker) execute(ctx context.Context, h Handler, m *jetstream.Msg) {
	t, err := jetstream.DecodeTask(m.Data())
	if err != nil {
		w.deadLetter(m, err.Error())
		return
	}
	log := w.log.With().Str("instance_id", t.Instance).Str("step", t.Step).Int("attempt", t.Attempt).Str("task_type", t.Type).Logger()
	if want := jetstream.TaskSubject(t.Type); m.Subject() != want {
		w.deadLetter(m, fmt.Sprintf("task of type %q published on %s, expected %s", t.Type, m.Subject(), want))
		return
	}
	ioCtx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	if t.Once {
		w.executeOnce(ctx, ioCtx, h, m, t, log)
		return
	}
	if n := m.Deliveries(); n > uint64(w.cfg.MaxDeliveries) {
		// Workers keep dying (or hanging past AckWait) on this task: report
		// the attempt as failed instead of redelivering it forever.
		msg := fmt.Sprintf("task delivered %d times without a result (worker crashed or exceeded its ack deadline)", n)
		log.Warn().Msg(msg)
		w.report(ioCtx, m, t, "", errors.New(msg), log)
		return
	}
	raw, err := t.Input, error(nil)
	if len(raw) == 0 {
		raw, err = w.client.DataRaw(ioCtx, t.InputRef)
	}
	if err != nil {
		if errors.Is(err, workflow.ErrNotFound) {
			w.report(ioCtx, m, t, "", Permanent(fmt.Errorf("input %s is missing", t.InputRef)), log)
			return
		}
		log.Warn().Err(err).Msg("cannot load input; task will be redelivered")
		_ = m.Nak(time.Second)
		return
	}
	task := &Task{
		Instance: t.Instance, Workflow: t.Workflow, Step: t.Step, Type: t.Type,
		Attempt: t.Attempt, MaxAttempts: t.MaxAttempts, EffectKey: t.EffectKey, input: raw,
	}
	start := time.Now()
	out, herr := w.run(ctx, h, task, t.Timeout, m)
	if ctx.Err() != nil && herr != nil {
		// Cancelled by shutdown: hand the task to another worker now.
		log.Info().Msg("handler cancelled by shutdown; task returned")
		_ = m.Nak(0)
		return
	}
	outRef := ""
	if herr == nil && out != nil {
		b, err := jetstream.EncodeValue(out)
		if err != nil {
			herr = Permanent(fmt.Errorf("output cannot be encoded: %w", err))
		} else {
			outRef = workflow.OutputKey(t.Instance, t.Step, t.Attempt)
			if err := w.client.PutDataEncoded(ioCtx, outRef, b, nil); err != nil {
				if errors.Is(err, jetstream.ErrTooLarge) {
					herr, outRef = Permanent(err), ""
				} else {
					log.Warn().Err(err).Msg("cannot store output; task will be redelivered")
					_ = m.Nak(time.Second)
					return
				}
			}
		}
	}
	log.Debug().Dur("took", time.Since(start)).AnErr("error", herr).Msg("task done")
	w.report(ioCtx, m, t, outRef, herr, log)
}

// run calls the handler with a deadline, heartbeats and panic recovery.
func (w *Worker) run(ctx context.Context, h Handler, task *Task, timeout time.Duration, m *jetstream.Msg) (out any, err error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	stop := make(chan struct{})
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		t := time.NewTicker(w.cfg.HeartbeatInterval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				_ = m.InProgress()
			}
		}
	}()
	defer func() {
		close(stop)
		<-hbDone
	}()
	defer func() {
		if r := recover(); r != nil {
			w.log.Error().Str("instance_id", task.Instance).Str("step", task.Step).Interface("panic", r).Bytes("stack", debug.Stack()).Msg("handler panicked")
			out, err = nil, fmt.Errorf("handler panicked: %v", r)
		}
	}()
	out, err = h(ctx, task)
	if err == nil && ctx.Err() != nil && timeout > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("attempt exceeded its timeout of %s", timeout)
	}
	return out, err
}

// report publishes the attempt's result and acks the task.
func (w *Worker) report(ctx context.Context, m *jetstream.Msg, t workflow.Task, outRef string, herr error, log zerolog.Logger) {
	ev := workflow.Event{Kind: workflow.EventResult, Instance: t.Instance, Step: t.Step, Attempt: t.Attempt, OutputRef: outRef}
	if herr != nil {
		ev.Error = herr.Error()
		ev.Permanent = IsPermanent(herr)
		ev.RetryAfter = retryDelay(herr)
	}
	if err := w.client.PublishEvent(ctx, ev, workflow.ResultMsgID(t.Instance, t.Step, t.Attempt)); err != nil {
		log.Warn().Err(err).Msg("cannot publish result; task will be redelivered")
		_ = m.Nak(time.Second)
		return
	}
	if err := m.Ack(); err != nil {
		// The result is recorded; a redelivery will produce a duplicate
		// result that the dispatcher ignores.
		log.Warn().Err(err).Msg("ack failed after the result was published")
	}
}

func (w *Worker) deadLetter(m *jetstream.Msg, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	if err := w.client.DeadLetter(ctx, "task", m, "worker", reason); err != nil {
		w.log.Error().Err(err).Str("reason", reason).Msg("dead-letter failed; task will be redelivered")
		_ = m.Nak(time.Second)
		return
	}
	w.log.Warn().Str("subject", m.Subject()).Str("reason", reason).Msg("task dead-lettered")
	_ = m.Term(reason)
}
