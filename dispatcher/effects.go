package dispatcher

import (
	"context"
	"errors"
	"fmt"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/tasktoken"
	"github.com/jetflow/jetflow/workflow"
)

// EffectStore holds the claims and outcomes of steps marked once: true
// (jetstream.Effect, in BucketEffects). With task tokens the dispatcher
// is its only writer: it serves the workers' claim and record requests
// (ServeEffects) and checks a replayed outcome against it.
type EffectStore interface {
	// ClaimEffect creates the claim; workflow.ErrExists when the key was
	// claimed before.
	ClaimEffect(ctx context.Context, key string, e *jetstream.Effect) (uint64, error)
	// RecordEffect writes the outcome over the claim at rev;
	// workflow.ErrConflict when the record changed since.
	RecordEffect(ctx context.Context, key string, e *jetstream.Effect, rev uint64) (uint64, error)
	// GetEffect reads a key's record and revision; workflow.ErrNotFound
	// when it was never claimed.
	GetEffect(ctx context.Context, key string) (*jetstream.Effect, uint64, error)
	// ServeEffects answers the workers' effect requests until ctx ends.
	ServeEffects(ctx context.Context, handle func(context.Context, jetstream.EffectOp, *jetstream.EffectRequest) *jetstream.EffectReply, dropped func(op jetstream.EffectOp, reason string)) error
}

// maxNonce bounds a claim nonce (workers send 16 hex digits).
const maxNonce = 64

// serveEffect answers one effect request: a claim of a once step's
// effect key, or the record of its outcome, on behalf of the worker that
// holds the attempt's task token. What it refuses changes nothing.
func (d *Dispatcher) serveEffect(ctx context.Context, op jetstream.EffectOp, req *jetstream.EffectRequest) *jetstream.EffectReply {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.OpTimeout)
	defer cancel()
	r := d.effect(ctx, op, req)
	d.stats.effectRequests.WithLabelValues(string(op), string(r.Status)).Inc()
	switch r.Status {
	case jetstream.EffectRefused:
		d.log.Warn().Str("op", string(op)).Str("instance_id", req.Instance).Str("step", req.Step).Int("attempt", req.Attempt).
			Str("reason", r.Reason).Msg("effect request refused")
	case jetstream.EffectFailed:
		d.log.Error().Str("op", string(op)).Str("instance_id", req.Instance).Str("step", req.Step).Int("attempt", req.Attempt).
			Str("reason", r.Reason).Msg("effect request failed")
	}
	return r
}

// effectDropped counts a request that never reached serveEffect.
func (d *Dispatcher) effectDropped(op jetstream.EffectOp, reason string) {
	d.stats.effectRequests.WithLabelValues(string(op), string(jetstream.EffectRefused)).Inc()
	d.log.Warn().Str("op", string(op)).Str("reason", reason).Msg("effect request refused")
}

func refused(format string, args ...any) *jetstream.EffectReply {
	return &jetstream.EffectReply{Status: jetstream.EffectRefused, Reason: fmt.Sprintf(format, args...)}
}

func failed(err error) *jetstream.EffectReply {
	return &jetstream.EffectReply{Status: jetstream.EffectFailed, Reason: err.Error()}
}

func (d *Dispatcher) effect(ctx context.Context, op jetstream.EffectOp, req *jetstream.EffectRequest) *jetstream.EffectReply {
	switch {
	case req.Instance == "" || req.Step == "" || req.Attempt < 1:
		return refused("malformed effect request: instance %q, step %q, attempt %d", req.Instance, req.Step, req.Attempt)
	case req.Nonce == "" || len(req.Nonce) > maxNonce:
		return refused("malformed effect request: the claim nonce must have 1 to %d characters", maxNonce)
	}
	// Only the worker that received the attempt holds its token. (Without
	// task tokens nothing binds a request to a task: any worker may claim
	// any step, as it may publish any result.)
	if d.cfg.TaskTokens != nil {
		if err := d.cfg.TaskTokens.Verify(req.Instance, req.Step, req.Attempt, req.Token, d.cfg.Clock()); err != nil {
			return refused("%v", err)
		}
	}
	key := workflow.EffectKey(req.Instance, req.Step)
	if op == jetstream.EffectRecord {
		return d.recordEffect(ctx, key, req)
	}
	claim := &jetstream.Effect{
		Instance: req.Instance, Step: req.Step, Attempt: req.Attempt, Delivery: req.Delivery,
		Token: req.Nonce, Claimed: d.cfg.Clock(),
	}
	rev, err := d.client.ClaimEffect(ctx, key, claim)
	switch {
	case err == nil:
		return &jetstream.EffectReply{Status: jetstream.EffectClaimed, Revision: rev}
	case !errors.Is(err, workflow.ErrExists):
		return failed(err)
	}
	cur, rev, err := d.client.GetEffect(ctx, key)
	if err != nil {
		return failed(err)
	}
	return &jetstream.EffectReply{Status: jetstream.EffectExists, Revision: rev, Record: cur}
}

// recordEffect writes the outcome of req over its claim: only the
// attempt and the execution (nonce) that made the claim may, once, and
// only with the attempt's own output key (workflow.TokenOutputKey), so
// every outcome in the bucket names an output its attempt wrote.
func (d *Dispatcher) recordEffect(ctx context.Context, key string, req *jetstream.EffectRequest) *jetstream.EffectReply {
	if req.OutputRef != "" {
		if want := workflow.TokenOutputKey(req.Instance, req.Step, req.Attempt, req.Token); req.OutputRef != want {
			return refused("%v: output %s is not the key of attempt %d of step %s", tasktoken.ErrForged, req.OutputRef, req.Attempt, req.Step)
		}
		if req.Error != "" {
			return refused("malformed effect request: an outcome has an output or an error, not both")
		}
	}
	cur, rev, err := d.client.GetEffect(ctx, key)
	switch {
	case errors.Is(err, workflow.ErrNotFound):
		return refused("effect %s was never claimed", key)
	case err != nil:
		return failed(err)
	case cur.Attempt != req.Attempt || cur.Token != req.Nonce:
		return refused("effect %s was claimed by another execution (attempt %d), not this one", key, cur.Attempt)
	case cur.Done:
		return sameOutcome(cur, req, rev)
	case rev != req.Revision:
		return &jetstream.EffectReply{Status: jetstream.EffectConflict, Revision: rev, Record: cur}
	}
	rec := *cur
	rec.Done, rec.OutputRef, rec.Error, rec.Ended = true, req.OutputRef, req.Error, d.cfg.Clock()
	if _, err := d.client.RecordEffect(ctx, key, &rec, rev); err != nil {
		if !errors.Is(err, workflow.ErrConflict) {
			return failed(err)
		}
		// An earlier try of this request may have landed.
		cur, rev, err = d.client.GetEffect(ctx, key)
		if err != nil {
			return failed(err)
		}
		if cur.Token != req.Nonce || !cur.Done {
			return &jetstream.EffectReply{Status: jetstream.EffectConflict, Revision: rev, Record: cur}
		}
		return sameOutcome(cur, req, rev)
	}
	return &jetstream.EffectReply{Status: jetstream.EffectRecorded}
}

// sameOutcome answers a record request for a claim that already has an
// outcome: recorded if it is the request's (a repeated try), else
// conflict.
func sameOutcome(cur *jetstream.Effect, req *jetstream.EffectRequest, rev uint64) *jetstream.EffectReply {
	if cur.OutputRef == req.OutputRef && cur.Error == req.Error {
		return &jetstream.EffectReply{Status: jetstream.EffectRecorded}
	}
	return &jetstream.EffectReply{Status: jetstream.EffectConflict, Revision: rev, Record: cur}
}

// checkReplayedOutput decides a result with task tokens whose OutputRef
// is not its own attempt's key: allowed only for a once step reporting
// the outcome an earlier attempt recorded, and only when the effect
// record (written by a dispatcher, which checked that attempt's token
// and key) names exactly that output. errForgedOutput says it is not;
// another error is a failure to read the record (retry later).
func (d *Dispatcher) checkReplayedOutput(ctx context.Context, ev workflow.Event) error {
	if _, ok := workflow.EarlierOutputKey(ev.OutputRef, ev.Instance, ev.Step, ev.Attempt); !ok {
		return fmt.Errorf("%w: output %s is not the key of attempt %d of step %s", errForgedOutput, ev.OutputRef, ev.Attempt, ev.Step)
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.OpTimeout)
	defer cancel()
	rec, _, err := d.client.GetEffect(ctx, workflow.EffectKey(ev.Instance, ev.Step))
	switch {
	case errors.Is(err, workflow.ErrNotFound):
		return fmt.Errorf("%w: output %s is not the key of attempt %d of step %s, and the step has no recorded outcome", errForgedOutput, ev.OutputRef, ev.Attempt, ev.Step)
	case err != nil:
		return err
	case !rec.Done || rec.OutputRef != ev.OutputRef:
		return fmt.Errorf("%w: output %s is not the key of attempt %d of step %s, nor its recorded outcome", errForgedOutput, ev.OutputRef, ev.Attempt, ev.Step)
	}
	return nil
}

// errForgedOutput: a result names an output that is not its attempt's.
var errForgedOutput = tasktoken.ErrForged
