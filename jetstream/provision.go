package jetstream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	natsjs "github.com/nats-io/nats.go/jetstream"
)

// ErrNotProvisioned matches the error of a client that may not (or was
// told not to) provision and found an asset jetflow needs missing.
var ErrNotProvisioned = errors.New("jetflow is not provisioned on this NATS account")

// MissingError names an asset that does not exist (or lacks something)
// and how to make it.
type MissingError struct {
	// What is missing, e.g. "stream JETFLOW_TASKS" or "consumer worker_echo
	// on stream JETFLOW_TASKS".
	What string
	// Fix is the command that provisions it.
	Fix string
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("%v: %s does not exist; run `%s` with admin credentials", ErrNotProvisioned, e.What, e.Fix)
}

// Unwrap makes the error match ErrNotProvisioned.
func (e *MissingError) Unwrap() error { return ErrNotProvisioned }

// ProvisionCommand is the CLI command that provisions jetflow.
const ProvisionCommand = "jetflow provision"

// Verify checks, without changing anything, that every stream, bucket
// and dispatcher consumer Provision would make exists, and binds the
// buckets; an error matching ErrNotProvisioned names what is missing. A
// stream whose settings differ from this client's configuration is used
// as it is, with a warning. From then on the client does not provision
// (as with Config.NoProvision).
func (c *Client) Verify(ctx context.Context) error {
	c.noProvision.Store(true)
	return c.guarded(ctx, []string{jsAPI}, func(ctx context.Context) error {
		streams := c.streamConfigs()
		streams = append(streams, natsjs.StreamConfig{Name: StreamTriggers})
		for _, sc := range streams {
			st, err := c.js.Stream(ctx, sc.Name)
			if errors.Is(err, natsjs.ErrStreamNotFound) {
				return &MissingError{What: "stream " + sc.Name, Fix: ProvisionCommand}
			}
			if err != nil {
				return fmt.Errorf("look up stream %s: %w", sc.Name, err)
			}
			if sc.Name != StreamTriggers && !sameStream(st.CachedInfo().Config, sc) {
				c.log.Warn().Str("stream", sc.Name).Msg("stream settings differ from this process's configuration; they stay as they are (run `jetflow provision` with admin credentials to change them)")
			}
		}
		for _, s := range []string{StreamTriggers, StreamEvents, StreamSchedules} {
			if _, err := c.lookupConsumer(ctx, s, ConsumerDispatcher, ProvisionCommand); err != nil {
				return err
			}
		}
		return c.bind(ctx)
	})
}

// lookupConsumer checks that a durable consumer exists.
func (c *Client) lookupConsumer(ctx context.Context, stream, name, fix string) (natsjs.Consumer, error) {
	cons, err := c.js.Consumer(ctx, stream, name)
	switch {
	case errors.Is(err, natsjs.ErrConsumerNotFound):
		return nil, &MissingError{What: "consumer " + name + " on stream " + stream, Fix: fix}
	case errors.Is(err, natsjs.ErrStreamNotFound):
		return nil, &MissingError{What: "stream " + stream, Fix: ProvisionCommand}
	case err != nil:
		return nil, fmt.Errorf("look up consumer %s on %s: %w", name, stream, err)
	}
	return cons, nil
}

// bindTaskConsumer returns the existing durable consumer of a task type.
func (c *Client) bindTaskConsumer(ctx context.Context, taskType string) (*TaskConsumer, error) {
	var cons natsjs.Consumer
	err := c.guarded(ctx, []string{jsAPI}, func(ctx context.Context) (err error) {
		cons, err = c.lookupConsumer(ctx, StreamTasks, WorkerConsumer(taskType), ProvisionCommand+" --task-types "+taskType)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("task type %s: %w", taskType, err)
	}
	return &TaskConsumer{cons: cons, c: c}, nil
}

// missingTriggerSubjects is the error of a trigger stream that does not
// exist or does not capture every subject in merged; current lists the
// subjects it has (after StartSubjects).
func missingTriggerSubjects(exists bool, merged, want []string) error {
	if !exists {
		return &MissingError{What: "stream " + StreamTriggers, Fix: ProvisionCommand}
	}
	current := want[1:]
	var missing []string
	for _, s := range merged {
		if !slices.Contains(current, s) {
			missing = append(missing, s)
		}
	}
	return &MissingError{
		What: "capture of trigger subjects " + strings.Join(missing, ", ") + " in stream " + StreamTriggers,
		Fix:  "jetflow register (the definition) or " + ProvisionCommand,
	}
}

// NoProvision reports whether the client only binds (Config.NoProvision,
// or the server denied it a change).
func (c *Client) NoProvision() bool { return c.noProvision.Load() }
