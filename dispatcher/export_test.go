package dispatcher

import (
	"context"
	"time"
)

// SweepTasks runs one sweep of the task guard over messages stored
// before before.
func SweepTasks(ctx context.Context, d *Dispatcher, before time.Time) error {
	return d.sweepTasks(ctx, before)
}

// ReconcileSlots runs one pass of the repair loop's slot reconciliation.
func ReconcileSlots(ctx context.Context, d *Dispatcher) {
	(&repairLoop{d: d}).reconcileSlots(ctx)
}
