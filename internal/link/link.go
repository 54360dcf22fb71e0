// Package link lets jetflow's own packages reach what users cannot: the
// adapter behind a *jetflow.Client (for package worker and the
// binaries), and a worker.Task made from a value (for jetflowtest).
//
// The public packages set these functions in their init; they are typed
// any where the concrete type would be an import cycle.
package link

import (
	"context"

	"github.com/jetflow/jetflow/jetstream"
)

var (
	// Adapter returns the adapter client behind a *jetflow.Client.
	Adapter func(client any) *jetstream.Client
	// Ready binds a *jetflow.Client to jetflow's buckets (once; it is
	// tried again after a failure).
	Ready func(ctx context.Context, client any) error
	// Client returns a *jetflow.Client on an adapter client that is
	// already bound (Bind or Provision succeeded).
	Client func(c *jetstream.Client) any
	// Task returns a *worker.Task with the given attributes whose input
	// is the stored value b (JSON, as the data bucket holds it).
	Task func(t TaskFields, b []byte) any
)

// TaskFields are the exported fields of a worker.Task.
type TaskFields struct {
	Instance, Workflow, Step, Type string
	Attempt, MaxAttempts           int
	EffectKey                      string
}
