package jetstream

import (
	"context"
	"errors"
	"sort"

	"github.com/jetflow/jetflow/workflow"
)

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
