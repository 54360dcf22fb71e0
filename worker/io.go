package worker

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/rs/zerolog"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// ioBackoffMax caps the wait between two tries of one NATS operation.
const ioBackoffMax = 5 * time.Second

// retryIO runs one NATS operation of a task until it succeeds, gets a
// definite answer, or ctx ends (the worker's hard shutdown). Each try gets
// at most IOTimeout, so a request sent to a stream leader that just died
// is abandoned after seconds, not after the whole task budget.
//
// Transient failures are retried here, holding the task (its heartbeat
// keeps running), instead of NAKing it: every redelivery counts against
// MaxDeliveries, which exists to catch workers that crash on a task, and a
// NAK loop while a NATS node is replaced burns that budget in seconds and
// fails healthy work ("task delivered 11 times without a result", issue 7).
func (w *Worker) retryIO(ctx context.Context, log zerolog.Logger, what string, op func(ctx context.Context) error) error {
	delay := 100 * time.Millisecond
	for try := 1; ; try++ {
		tctx, cancel := context.WithTimeout(ctx, w.cfg.IOTimeout)
		err := op(tctx)
		cancel()
		if err == nil || definite(err) || ctx.Err() != nil {
			if err != nil && ctx.Err() != nil && !definite(err) {
				err = errors.Join(err, ctx.Err())
			}
			return err
		}
		if try == 1 || try%10 == 0 {
			log.Warn().Err(err).Int("try", try).Msgf("%s failed; retrying", what)
		}
		sleep := delay/2 + rand.N(delay/2+1)
		select {
		case <-time.After(sleep):
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		}
		delay = min(2*delay, ioBackoffMax)
	}
}

// definite reports an error that another try would only repeat.
func definite(err error) bool {
	return errors.Is(err, workflow.ErrNotFound) || errors.Is(err, workflow.ErrExists) ||
		errors.Is(err, workflow.ErrConflict) || errors.Is(err, jetstream.ErrTooLarge) ||
		errors.Is(err, jetstream.ErrEffectRefused)
}

// heartbeat keeps m's ack deadline alive until the returned func is called.
func (w *Worker) heartbeat(m *jetstream.Msg) (stop func()) {
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(w.cfg.HeartbeatInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = m.InProgress()
			}
		}
	}()
	return func() {
		close(done)
		<-exited
	}
}
