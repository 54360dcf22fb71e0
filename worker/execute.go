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

// deadLetterTimeout bounds the tries to dead-letter one malformed task.
const deadLetterTimeout = 30 * time.Second

// execute runs one task message: decode, load input, run the handler,
// store the output, publish the result, ack. This is the one place where a
// handler's outcome becomes a result and an ack, nak or term. The task's
// ack deadline is extended from start to finish, NATS calls included, and
// those calls are retried in place (retryIO), so a NATS node being replaced
// costs time, not deliveries.
func (w *Worker) execute(ctx context.Context, h Handler, m *jetstream.Msg) {
	t, err := jetstream.DecodeTask(m.Data())
	if err != nil {
		w.deadLetter(ctx, m, "malformed", err.Error())
		return
	}
	log := w.log.With().Str("instance_id", t.Instance).Str("step", t.Step).Int("attempt", t.Attempt).Str("task_type", t.Type).Logger()
	if want := jetstream.TaskSubject(t.Type); m.Subject() != want {
		w.deadLetter(ctx, m, "misrouted", fmt.Sprintf("task of type %q published on %s, expected %s", t.Type, m.Subject(), want))
		return
	}
	defer w.heartbeat(m)()
	w.metrics.received(t.Type, m.Deliveries(), m.Stored())
	ctx, span := w.traceTask(ctx, m, t)
	if span != nil {
		defer span.End()
	}
	if n := m.Deliveries(); n > uint64(w.cfg.MaxDeliveries) {
		// Workers keep dying (or hanging past AckWait) on this task: report
		// the attempt as failed instead of redelivering it forever.
		msg := fmt.Sprintf("task delivered %d times without a result (worker crashed or exceeded its ack deadline)", n)
		log.Warn().Msg(msg)
		w.report(ctx, m, t, "", errors.New(msg), log)
		return
	}
	if t.Once {
		w.executeOnce(ctx, h, m, t, log)
		return
	}
	raw, err := w.input(ctx, t, log)
	if err != nil {
		if errors.Is(err, workflow.ErrNotFound) {
			w.report(ctx, m, t, "", Permanent(fmt.Errorf("input %s is missing", t.InputRef)), log)
			return
		}
		w.giveBack(m, log, "cannot load input", err)
		return
	}
	task := &Task{
		Instance: t.Instance, Workflow: t.Workflow, Step: t.Step, Type: t.Type,
		Attempt: t.Attempt, MaxAttempts: t.MaxAttempts, EffectKey: t.EffectKey, input: raw,
	}
	start := time.Now()
	out, herr := w.run(ctx, h, task, t.Timeout)
	if ctx.Err() != nil && herr != nil {
		// Cancelled by shutdown: hand the task to another worker now.
		log.Info().Msg("handler cancelled by shutdown; task returned")
		_ = m.Nak(0)
		return
	}
	outRef := ""
	if herr == nil && out != nil {
		b, err := encodeOutput(out)
		if err != nil {
			herr = err
		} else {
			outRef = workflow.TokenOutputKey(t.Instance, t.Step, t.Attempt, t.Token)
			err := w.retryIO(ctx, log, "store output", func(ctx context.Context) error {
				return w.client.PutDataEncoded(ctx, outRef, b, nil)
			})
			switch {
			case errors.Is(err, jetstream.ErrTooLarge):
				herr, outRef = Permanent(err), ""
			case err != nil:
				w.giveBack(m, log, "cannot store output", err)
				return
			}
		}
	}
	log.Debug().Stringer("took", time.Since(start)).AnErr("error", herr).Msg("task done")
	w.report(ctx, m, t, outRef, herr, log)
}

// encodeOutput encodes a handler's output for the data bucket: JSON as
// encoding/json.Marshal writes it. An output JSON cannot hold (NaN, a
// channel, a Marshaler's error) or nested deeper than workflow.MaxDepth
// fails the attempt permanently: another attempt would return the same.
func encodeOutput(out any) ([]byte, error) {
	b, err := jetstream.EncodeValue(out)
	if err != nil {
		return nil, Permanent(fmt.Errorf("output cannot be stored: %w", err))
	}
	return b, nil
}

// input returns the task's input: inline in the message or from the data
// bucket.
func (w *Worker) input(ctx context.Context, t workflow.Task, log zerolog.Logger) ([]byte, error) {
	if len(t.Input) > 0 {
		return t.Input, nil
	}
	var raw []byte
	err := w.retryIO(ctx, log, "load input", func(ctx context.Context) (err error) {
		raw, err = w.client.DataRaw(ctx, t.InputRef)
		return err
	})
	return raw, err
}

// giveBack returns a task to the stream after a NATS call failed for good
// (the worker is shutting down, or the error is not transient).
func (w *Worker) giveBack(m *jetstream.Msg, log zerolog.Logger, what string, err error) {
	log.Warn().Err(err).Msgf("%s; task will be redelivered", what)
	_ = m.Nak(time.Second)
}

// run calls the handler with a deadline and panic recovery.
func (w *Worker) run(ctx context.Context, h Handler, task *Task, timeout time.Duration) (out any, err error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			w.log.Error().Str("instance_id", task.Instance).Str("step", task.Step).Interface("panic", r).Bytes("stack", debug.Stack()).Msg("handler panicked")
			out, err = nil, &panicError{value: r}
		}
		w.metrics.execution.WithLabelValues(task.Type).Observe(time.Since(start).Seconds())
	}()
	out, err = h(ctx, task)
	if timeout > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		switch {
		case err == nil:
			err = &timeoutError{err: fmt.Errorf("attempt exceeded its timeout of %s", timeout)}
		case errors.Is(err, context.DeadlineExceeded):
			err = &timeoutError{err: err}
		}
	}
	return out, err
}

// report publishes the attempt's result and acks the task.
func (w *Worker) report(ctx context.Context, m *jetstream.Msg, t workflow.Task, outRef string, herr error, log zerolog.Logger) {
	ev := workflow.Event{Kind: workflow.EventResult, Instance: t.Instance, Step: t.Step, Attempt: t.Attempt, OutputRef: outRef, Token: t.Token, Worker: w.cfg.Name}
	if herr != nil {
		ev.Error = herr.Error()
		ev.Permanent = IsPermanent(herr)
		ev.RetryAfter = retryDelay(herr)
	}
	err := w.retryIO(ctx, log, "publish result", func(ctx context.Context) error {
		return w.client.PublishEvent(ctx, ev, workflow.ResultMsgID(t.Instance, t.Step, t.Attempt))
	})
	if err != nil {
		w.giveBack(m, log, "cannot publish result", err)
		return
	}
	w.metrics.reported(t.Type, herr)
	traceOutcome(ctx, herr)
	if err := m.Ack(); err != nil {
		// The result is recorded; a redelivery will produce a duplicate
		// result that the dispatcher ignores.
		log.Warn().Err(err).Msg("ack failed after the result was published")
	}
}

func (w *Worker) deadLetter(ctx context.Context, m *jetstream.Msg, class, reason string) {
	ctx, cancel := context.WithTimeout(ctx, deadLetterTimeout)
	defer cancel()
	err := w.retryIO(ctx, w.log, "dead-letter", func(ctx context.Context) error {
		return w.client.DeadLetter(ctx, "task", m, "worker", reason)
	})
	if err != nil {
		w.log.Error().Err(err).Str("reason", reason).Msg("dead-letter failed; task will be redelivered")
		_ = m.Nak(time.Second)
		return
	}
	w.metrics.deadLetters.WithLabelValues(class).Inc()
	w.log.Warn().Str("subject", m.Subject()).Str("reason", reason).Msg("task dead-lettered")
	_ = m.Term(reason)
}
