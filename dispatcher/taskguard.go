package dispatcher

import (
	"context"
	"fmt"
	"time"
)

// taskGuardBatch bounds the messages of one task type a sweep removes.
const taskGuardBatch = 1000

// guardTasks removes, every TaskGuardInterval, the messages stored in
// the task stream for task types that no registered definition uses
// (any version) and that were stored more than TaskGuardGrace ago: no
// worker consumes them, so they would stay for good. Each is kept as a
// dead letter (source "task") with the reason. Messages of a task type
// whose definition is registered within the grace are left alone.
func (d *Dispatcher) guardTasks(ctx context.Context) {
	t := time.NewTicker(d.cfg.TaskGuardInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := d.sweepTasks(ctx, d.cfg.Clock().Add(-d.cfg.TaskGuardGrace)); err != nil && ctx.Err() == nil {
				d.log.Warn().Err(err).Msg("task guard: sweep failed; the next one retries")
			}
		}
	}
}

// sweepTasks removes the messages of unknown task types stored before
// before.
func (d *Dispatcher) sweepTasks(ctx context.Context, before time.Time) error {
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	stored, err := d.client.TaskTypesStored(sctx)
	if err != nil || len(stored) == 0 {
		return err
	}
	defs, err := d.client.Definitions(sctx)
	if err != nil {
		return err
	}
	used := map[string]bool{}
	for _, def := range defs {
		for _, t := range def.TaskTypes() {
			used[t] = true
		}
	}
	for taskType, n := range stored {
		if used[taskType] {
			continue
		}
		reason := fmt.Sprintf("task type %q is used by no registered workflow definition: no worker would ever take this message", taskType)
		removed, err := d.client.RemoveTasks(sctx, taskType, before, reason, taskGuardBatch)
		d.stats.deadLetters.WithLabelValues(reasonUnknownTaskType).Add(float64(removed))
		if removed > 0 {
			d.log.Warn().Str("task_type", taskType).Int("removed", removed).Uint64("stored", n).Msg("task guard: messages of an unknown task type dead-lettered")
		}
		if err != nil {
			return err
		}
	}
	return nil
}
