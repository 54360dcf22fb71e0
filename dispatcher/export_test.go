package dispatcher

import (
	"context"
	"time"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// WithDroppedTriggerAcks returns cfg with a hook that withholds the ack of
// every trigger message for which drop returns true, once its starts were
// applied: what a dispatcher that dies between the commit and the ack
// leaves behind.
func WithDroppedTriggerAcks(cfg Config, drop func(*jetstream.Msg) bool) Config {
	cfg.dropTriggerAck = drop
	return cfg
}

// WithRedeliveredEvents returns cfg with a hook that NAKs, unprocessed,
// the first delivery of every event message for which redeliver returns
// true, so the event is applied on its second delivery: what a pass that
// failed after some of its effects leaves behind.
func WithRedeliveredEvents(cfg Config, redeliver func(*jetstream.Msg) bool) Config {
	cfg.redeliverEvent = redeliver
	return cfg
}

// WithRedeliveredFires returns cfg with a hook that NAKs, instead of
// acking, the first delivery of every schedule fire for which redeliver
// returns true, after its instance was started: the fire comes again.
func WithRedeliveredFires(cfg Config, redeliver func(*jetstream.Msg) bool) Config {
	cfg.redeliverFire = redeliver
	return cfg
}

// WithRecountEvery returns cfg with the throttle of recounts set to d.
func WithRecountEvery(cfg Config, d time.Duration) Config {
	cfg.recountEvery = d
	return cfg
}

// WithBatchDelay returns cfg with shards waiting d after the first event
// of a batch, so events that arrive together are applied in one pass.
func WithBatchDelay(cfg Config, d time.Duration) Config {
	cfg.batchDelay = d
	return cfg
}

// WithFailedCommits returns cfg with a hook that fails a pass just before
// its CAS (barriers and data already written) whenever fail returns true
// for the instance.
func WithFailedCommits(cfg Config, fail func(instance string) bool) Config {
	cfg.failCommit = fail
	return cfg
}

// WithFailedPublishes returns cfg with a hook that fails a pass after its
// CAS and before it publishes the decision whenever fail returns true.
func WithFailedPublishes(cfg Config, fail func(instance string, dec workflow.Decision) bool) Config {
	cfg.failPublish = fail
	return cfg
}

// WithLostAnswers returns cfg with a hook that fails a pass right after
// its CAS (what "commit") or its publish (what "publish") succeeded,
// whenever lose returns true, as if the server's answer had never come:
// the ambiguous "executed, then timed out" outcome of a request to a
// leader that died (jetstream.ErrRequestTimeout).
func WithLostAnswers(cfg Config, lose func(instance, what string) bool) Config {
	cfg.loseAnswer = lose
	return cfg
}

// WithDroppedPublishes returns cfg with a hook that, whenever drop returns
// true for a committed decision, skips publishing it and carries on as if
// it had been published (and its event is acked): what a server that
// crashed after acknowledging the messages leaves behind.
func WithDroppedPublishes(cfg Config, drop func(instance string, dec workflow.Decision) bool) Config {
	cfg.dropPublish = drop
	return cfg
}

// SweepTasks runs one sweep of the task guard over messages stored
// before before.
func SweepTasks(ctx context.Context, d *Dispatcher, before time.Time) error {
	return d.sweepTasks(ctx, before)
}
