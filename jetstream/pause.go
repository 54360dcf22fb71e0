package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/workflow"
)

// Pause records (jetflow pause, resume) live in BucketFlow under
// "pause.<workflow>": one PauseRecord per workflow that was ever paused.
// The CLI writes them by compare-and-swap; every dispatcher watches them
// (WatchPauses) and holds the attempts of a paused workflow's instances
// (workflow/pause.go).
const pausePrefix = "pause."

// PauseKey is the key of a workflow's pause record in BucketFlow.
func PauseKey(workflowName string) string { return pausePrefix + workflowName }

// PauseRecord is the stored pause state of a workflow.
type PauseRecord struct {
	// Paused: the workflow's attempts are held (a resume writes false).
	Paused bool `msgpack:"p" json:"paused"`
	// Since is when it was paused or resumed (the writer's clock).
	Since time.Time `msgpack:"t" json:"since"`
}

// PauseState is a workflow's pause record as read, with its revision in
// BucketFlow (a dispatcher that answers the stats request with a pause
// revision at least this one has seen the record).
type PauseState struct {
	Workflow string `json:"workflow"`
	PauseRecord
	Revision uint64 `json:"revision"`
}

// SetPaused pauses (paused true) or resumes a workflow by a
// compare-and-swap of its pause record. changed is false when the
// record already said so (nothing is written); st is the record as
// committed or found.
func (c *Client) SetPaused(ctx context.Context, workflowName string, paused bool, now time.Time) (st PauseState, changed bool, err error) {
	if err := workflow.ValidateName("workflow", workflowName); err != nil {
		return st, false, err
	}
	kv, err := c.flowKV(ctx)
	if err != nil {
		return st, false, err
	}
	key := PauseKey(workflowName)
	st.Workflow = workflowName
	for round := 0; round < maxFlowConflicts; round++ {
		var cur PauseRecord
		var rev uint64
		e, err := c.get(ctx, c.flw.b, key)
		switch {
		case err == nil:
			rev = e.Revision()
			if err := decode(e.Value(), &cur); err != nil {
				return st, false, fmt.Errorf("pause record %s: %w", key, err)
			}
		case errors.Is(err, natsjs.ErrKeyNotFound), errors.Is(err, natsjs.ErrKeyDeleted):
		default:
			return st, false, fmt.Errorf("read pause record %s: %w", key, translate(err))
		}
		if cur.Paused == paused && (rev > 0 || !paused) {
			st.PauseRecord, st.Revision = cur, rev
			return st, false, nil
		}
		next := PauseRecord{Paused: paused, Since: now.UTC()}
		b, err := encode(next)
		if err != nil {
			return st, false, err
		}
		var nrev uint64
		err = c.bounded(ctx, func(ctx context.Context) (err error) {
			if rev == 0 {
				nrev, err = kv.Create(ctx, key, b)
			} else {
				nrev, err = kv.Update(ctx, key, b, rev)
			}
			return err
		}, keySubject(BucketFlow, key))
		if err == nil {
			st.PauseRecord, st.Revision = next, nrev
			return st, true, nil
		}
		if err = translate(err); errors.Is(err, workflow.ErrConflict) || errors.Is(err, workflow.ErrExists) {
			continue
		}
		return st, false, fmt.Errorf("write pause record %s: %w", key, err)
	}
	return st, false, fmt.Errorf("pause record %s: %d CAS conflicts in a row: %w", key, maxFlowConflicts, workflow.ErrConflict)
}

// PauseOf reads one workflow's pause record (not paused when there is
// none).
func (c *Client) PauseOf(ctx context.Context, workflowName string) (PauseState, error) {
	st := PauseState{Workflow: workflowName}
	if _, err := c.flowKV(ctx); err != nil {
		return st, err
	}
	e, err := c.get(ctx, c.flw.b, PauseKey(workflowName))
	switch {
	case errors.Is(err, natsjs.ErrKeyNotFound), errors.Is(err, natsjs.ErrKeyDeleted):
		return st, nil
	case err != nil:
		return st, fmt.Errorf("read pause record of %s: %w", workflowName, translate(err))
	}
	st.Revision = e.Revision()
	if err := decode(e.Value(), &st.PauseRecord); err != nil {
		return st, fmt.Errorf("pause record of %s: %w", workflowName, err)
	}
	return st, nil
}

// Pauses lists the pause records (paused and resumed workflows), by
// workflow. A missing flow bucket reads as none.
func (c *Client) Pauses(ctx context.Context) (map[string]PauseState, error) {
	out := map[string]PauseState{}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	err := c.WatchPauses(wctx, cancel, func(st PauseState) { out[st.Workflow] = st })
	switch {
	case errors.Is(err, natsjs.ErrBucketNotFound):
		return out, nil
	case err != nil:
		return nil, err
	}
	return out, ctx.Err()
}

// WatchPauses calls fn with every pause record stored now and every
// change later, in revision order, calls ready once the stored ones were
// delivered, and blocks until ctx ends (nil) or the watch fails.
func (c *Client) WatchPauses(ctx context.Context, ready func(), fn func(PauseState)) error {
	if _, err := c.flowKV(ctx); err != nil {
		return err
	}
	w, err := c.watchKeys(ctx, c.flw.b, pausePrefix+"*")
	if err != nil {
		return fmt.Errorf("watch pause records: %w", err)
	}
	return follow(ctx, w, ready, func(e natsjs.KeyValueEntry) {
		st := PauseState{Workflow: strings.TrimPrefix(e.Key(), pausePrefix), Revision: e.Revision()}
		if e.Operation() == natsjs.KeyValuePut {
			if err := decode(e.Value(), &st.PauseRecord); err != nil {
				c.log.Warn().Err(err).Str("key", e.Key()).Msg("undecodable pause record; read as not paused")
			}
		}
		fn(st)
	})
}

// PauseConfirmation says which dispatchers applied a pause record.
type PauseConfirmation struct {
	// Confirmed: dispatchers that answered with a pause revision at least
	// the record's.
	Confirmed []string `json:"confirmed"`
	// Unconfirmed: dispatchers present (jetflow dispatchers) that did not
	// within the wait: not running any more (their presence record has
	// not expired yet), unreachable, or of a version without pause.
	Unconfirmed []string `json:"unconfirmed,omitempty"`
}

// AwaitPause waits, at most wait, until every dispatcher that is present
// or answers the stats request reports that it applied the pause records
// up to revision rev (StatsAnswer.PauseRevision): from then on none of
// them starts an attempt of a workflow paused at rev.
func (c *Client) AwaitPause(ctx context.Context, rev uint64, wait time.Duration) (PauseConfirmation, error) {
	deadline := time.Now().Add(wait)
	for {
		want := map[string]bool{}
		if present, err := c.Present(ctx, PresenceDispatcher); err == nil {
			for _, p := range present {
				want[p.Name] = false
			}
		}
		answers, err := c.CollectStats(ctx, min(500*time.Millisecond, max(time.Until(deadline), 50*time.Millisecond)))
		if err != nil {
			return PauseConfirmation{}, err
		}
		for _, raw := range answers {
			var a struct {
				Dispatcher    string `json:"dispatcher"`
				PauseRevision uint64 `json:"pause_revision"`
			}
			if json.Unmarshal(raw, &a) != nil {
				continue
			}
			want[a.Dispatcher] = want[a.Dispatcher] || a.PauseRevision >= rev
		}
		var out PauseConfirmation
		for _, name := range slices.Sorted(maps.Keys(want)) {
			if want[name] {
				out.Confirmed = append(out.Confirmed, name)
			} else {
				out.Unconfirmed = append(out.Unconfirmed, name)
			}
		}
		if len(out.Unconfirmed) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return out, ctx.Err()
		}
	}
}
