package jetstream

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/jetflow/jetflow/workflow"
)

// ErrEnded matches a cancel of an instance that already ended.
var ErrEnded = errors.New("instance already ended")

// Cancel asks the dispatchers to cancel a running instance; reason is
// recorded as its error. An instance that does not exist fails with
// workflow.ErrNotFound, one that already ended with ErrEnded. Cancels of
// one instance share a message id, so a repeated cancel is absorbed.
func (c *Client) Cancel(ctx context.Context, id, reason string) error {
	inst, _, err := c.GetInstance(ctx, id)
	if err != nil {
		return err
	}
	if inst.Status.Terminal() {
		return fmt.Errorf("cancel %s: %w (%s)", inst.ID, ErrEnded, inst.Status)
	}
	return c.PublishEvent(ctx, workflow.Event{Kind: workflow.EventCancel, Instance: inst.ID, Reason: reason}, "cancel/"+inst.ID)
}

// InstanceFilter selects instances for Instances; zero fields select all.
type InstanceFilter struct {
	Workflow string
	Status   workflow.Status
	EventKey string
	// Limit keeps the most recent Limit instances; 0 keeps all.
	Limit int
}

// Instances lists the instances that match f, most recently created
// first. It reads every instance key, so it is meant for operators and
// small tests, not for a hot path.
func (c *Client) Instances(ctx context.Context, f InstanceFilter) ([]*workflow.Instance, error) {
	ids, err := c.ListInstanceIDs(ctx)
	if err != nil {
		return nil, err
	}
	var rows []*workflow.Instance
	for _, id := range ids {
		inst, _, err := c.GetInstance(ctx, id)
		if errors.Is(err, workflow.ErrNotFound) {
			continue // expired or removed since the listing
		}
		if err != nil {
			return nil, err
		}
		if (f.Status != "" && inst.Status != f.Status) || (f.Workflow != "" && inst.Workflow != f.Workflow) || (f.EventKey != "" && inst.EventKey != f.EventKey) {
			continue
		}
		rows = append(rows, inst)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Created.After(rows[j].Created) })
	if f.Limit > 0 && len(rows) > f.Limit {
		rows = rows[:f.Limit]
	}
	return rows, nil
}
