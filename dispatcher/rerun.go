package dispatcher

import (
	"context"
	"errors"
	"fmt"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// startTarget is where a trigger's start for an event key goes: the
// instance id and, under trigger.on_duplicate: rerun, the run chosen by
// workflow.ChooseRun. Under ignore (the default) it is always the event
// key's instance, read by nobody here: the shard's KV Create is the guard.
type startTarget struct {
	id     string
	choice workflow.RunChoice
}

// chooseRun finds the run of an event key a trigger message starts. With
// on_duplicate: rerun it reads the key's runs first, run 1 onwards, until
// one does not exist; a read error is transient (the message is retried).
// A start for an existing run is a duplicate the shard drops as usual, so
// the run is created by the same KV Create as any instance: two messages
// that choose the same new run create it once.
func (d *Dispatcher) chooseRun(ctx context.Context, def *workflow.Definition, first string, m jetstream.Delivery, digest string) (startTarget, error) {
	if !def.Reruns() {
		return startTarget{id: first, choice: workflow.RunChoice{Run: 1}}, nil
	}
	var runs []*workflow.Instance
	for n := 1; n <= workflow.MaxRuns; n++ {
		inst, _, err := d.client.GetInstance(ctx, workflow.RunID(first, n))
		if errors.Is(err, workflow.ErrNotFound) {
			break
		}
		if err != nil {
			return startTarget{}, fmt.Errorf("find the latest run of %s: %w", first, err)
		}
		runs = append(runs, inst)
	}
	choice, err := workflow.ChooseRun(runs, m.StreamSeq(), digest)
	if err != nil {
		return startTarget{}, err
	}
	if !choice.New {
		d.log.Debug().Str("instance_id", workflow.RunID(first, choice.Run)).Int("run", choice.Run).
			Uint64("trigger_seq", m.StreamSeq()).Msg("duplicate trigger: " + choice.Why)
	}
	return startTarget{id: workflow.RunID(first, choice.Run), choice: choice}, nil
}
