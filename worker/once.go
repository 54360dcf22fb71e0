package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// ErrEffectUnknown matches the failure reported for a step marked
// once: true whose effect key was claimed by an earlier delivery that
// never recorded an outcome: the handler may or may not have run, and its
// effect may or may not have happened. jetflow does not run it again.
var ErrEffectUnknown = errors.New("effect outcome unknown")

// effectUnknownError is the error reported for an unresolved claim.
type effectUnknownError struct{ key string }

func (e *effectUnknownError) Error() string {
	return fmt.Sprintf("effect %s was claimed by an earlier delivery that did not record an outcome; it may or may not have happened", e.key)
}

func (e *effectUnknownError) Is(target error) bool { return target == ErrEffectUnknown }

// executeOnce runs a task of a step marked once: true. The handler runs
// only in the delivery that wins the Create of the step's effect key in
// BucketEffects; its outcome is recorded there before it is reported.
// Every other delivery — a redelivery after a lost ack, a zombie's task
// handed to another worker, a later attempt — reports the recorded
// outcome, or, when there is none, fails with ErrEffectUnknown (retryable,
// so a later attempt can still pick up an outcome a paused claimer
// records late). A handler's error is final: it is reported as
// permanent, since no later attempt would run the handler again.
//
// What this cannot do: make the handler's external effect atomic with the
// record. A worker that dies after the effect happened and before the
// outcome was recorded leaves a claim without an outcome, and nobody —
// jetflow included — can tell whether the effect happened.
func (w *Worker) executeOnce(ctx context.Context, h Handler, m *jetstream.Msg, t workflow.Task, log zerolog.Logger) {
	raw, err := w.input(ctx, t, log)
	if err != nil {
		if errors.Is(err, workflow.ErrNotFound) {
			w.report(ctx, m, t, "", Permanent(fmt.Errorf("input %s is missing", t.InputRef)), log)
			return
		}
		w.giveBack(m, log, "cannot load input", err)
		return
	}
	claim := &jetstream.Effect{
		Instance: t.Instance, Step: t.Step, Attempt: t.Attempt, Delivery: m.Deliveries(),
		Token: newToken(), Claimed: time.Now(),
	}
	rev, prior, err := w.claimEffect(ctx, t, claim, log)
	switch {
	case errors.Is(err, jetstream.ErrEffectRefused):
		// The dispatcher does not take this task's token (forged, or
		// signed with a retired key): its result would be refused too.
		w.deadLetter(ctx, m, "effect_refused", err.Error())
		return
	case err != nil:
		// Nothing ran. If the claim landed after all, the redelivery finds
		// it and reports the outcome as unknown; it never runs twice.
		w.giveBack(m, log, "cannot claim effect", err)
		return
	case prior != nil:
		w.replayEffect(ctx, m, t, prior, log)
		return
	}
	// This delivery holds the claim: the only one that runs the handler.
	task := &Task{
		Instance: t.Instance, Workflow: t.Workflow, Step: t.Step, Type: t.Type,
		Attempt: t.Attempt, MaxAttempts: t.MaxAttempts, EffectKey: t.EffectKey, input: raw,
	}
	out, herr := w.run(ctx, h, task, t.Timeout)
	outRef := ""
	if herr == nil && out != nil {
		b, err := encodeOutput(out)
		if err == nil {
			outRef = workflow.TokenOutputKey(t.Instance, t.Step, t.Attempt, t.Token)
			err = w.retryIO(ctx, log, "store output", func(ctx context.Context) error {
				return w.client.PutDataEncoded(ctx, outRef, b, nil)
			})
		}
		if err != nil {
			// The handler returned, so its effect happened; only the output
			// is lost. That outcome is recorded as it is.
			herr, outRef = fmt.Errorf("the handler returned but its output could not be stored: %w", err), ""
		}
	}
	rec := *claim
	rec.Done, rec.OutputRef, rec.Ended = true, outRef, time.Now()
	if herr != nil {
		rec.Error = herr.Error()
		herr = Permanent(herr)
	}
	err = w.recordEffect(ctx, t, &rec, rev, log)
	if err != nil {
		// Report what happened anyway: the result is what the dispatcher
		// needs. A redelivery (if this report is lost too) finds the claim
		// without an outcome and reports it unknown.
		log.Error().Err(err).Str("effect_key", t.EffectKey).Msg("cannot record the outcome of a once step")
	}
	w.report(ctx, m, t, outRef, herr, log)
}

// claimEffect claims t's effect key for this execution (claim). Without
// task tokens the worker writes the claim itself; with them (t.Token set),
// or when its NATS user may not write BucketEffects, it asks a
// dispatcher, which checks the token and writes (jetstream.RequestEffect). It returns the claim's revision, or the
// record of an earlier claim (prior) when the key was claimed before.
// Either way, a try whose answer was lost is recognised by the claim's
// nonce (claim.Token): a claim that is this execution's is ours.
func (w *Worker) claimEffect(ctx context.Context, t workflow.Task, claim *jetstream.Effect, log zerolog.Logger) (rev uint64, prior *jetstream.Effect, err error) {
	if w.claimsDirectly(t) {
		denied := false
		err = w.retryIO(ctx, log, "claim effect", func(ctx context.Context) (err error) {
			rev, err = w.client.ClaimEffect(ctx, t.EffectKey, claim)
			if errors.Is(err, jetstream.ErrPermissionDenied) {
				denied = true
				return nil
			}
			return err
		})
		switch {
		case denied:
			// This NATS user may not write the effects bucket (the
			// worker role): the dispatchers claim for it from now on.
			log.Info().Msg("this worker may not write the effects bucket; once steps are claimed through the dispatchers")
			w.effectsDenied.Store(true)
			return w.claimEffect(ctx, t, claim, log)
		case errors.Is(err, workflow.ErrExists):
			err = w.retryIO(ctx, log, "read effect record", func(ctx context.Context) (err error) {
				prior, _, err = w.client.GetEffect(ctx, t.EffectKey)
				return err
			})
			if err != nil {
				return 0, nil, err
			}
			return 0, prior, nil
		}
		return rev, nil, err
	}
	req := &jetstream.EffectRequest{
		Instance: t.Instance, Step: t.Step, Attempt: t.Attempt, Token: t.Token,
		Delivery: claim.Delivery, Nonce: claim.Token,
	}
	var r *jetstream.EffectReply
	err = w.retryIO(ctx, log, "claim effect", func(ctx context.Context) (err error) {
		r, err = w.client.RequestEffect(ctx, jetstream.EffectClaim, req)
		return err
	})
	switch {
	case err != nil:
		return 0, nil, err
	case r.Status == jetstream.EffectClaimed:
		return r.Revision, nil, nil
	case r.Status == jetstream.EffectExists && r.Record != nil:
		if rec := r.Record; rec.Token == claim.Token && rec.Attempt == t.Attempt && !rec.Done {
			return r.Revision, nil, nil // an earlier try of ours landed
		}
		return 0, r.Record, nil
	}
	return 0, nil, fmt.Errorf("claim effect %s: unexpected answer %q", t.EffectKey, r.Status)
}

// recordEffect records the outcome rec over the claim at revision rev:
// itself without task tokens, through a dispatcher with them.
func (w *Worker) recordEffect(ctx context.Context, t workflow.Task, rec *jetstream.Effect, rev uint64, log zerolog.Logger) error {
	if w.claimsDirectly(t) {
		return w.retryIO(ctx, log, "record effect", func(ctx context.Context) error {
			_, err := w.client.RecordEffect(ctx, t.EffectKey, rec, rev)
			if errors.Is(err, workflow.ErrConflict) {
				// A try that timed out may have landed: ours if it holds rec.
				if cur, _, gerr := w.client.GetEffect(ctx, t.EffectKey); gerr == nil && cur.Token == rec.Token && cur.Done {
					return nil
				}
			}
			return err
		})
	}
	req := &jetstream.EffectRequest{
		Instance: t.Instance, Step: t.Step, Attempt: t.Attempt, Token: t.Token,
		Delivery: rec.Delivery, Nonce: rec.Token, Revision: rev, OutputRef: rec.OutputRef, Error: rec.Error,
	}
	return w.retryIO(ctx, log, "record effect", func(ctx context.Context) error {
		// The dispatcher recognises a repeated try by the nonce and the
		// outcome, and answers recorded.
		r, err := w.client.RequestEffect(ctx, jetstream.EffectRecord, req)
		if err != nil {
			return err
		}
		if r.Status != jetstream.EffectRecorded {
			return fmt.Errorf("record effect %s: %s: %w", t.EffectKey, r.Status, workflow.ErrConflict)
		}
		return nil
	})
}

// claimsDirectly reports whether the worker writes t's claim and outcome
// itself: only without task tokens, and while the effects bucket lets it.
func (w *Worker) claimsDirectly(t workflow.Task) bool {
	return t.Token == "" && !w.effectsDenied.Load()
}

// replayEffect reports the outcome recorded under a claimed effect key.
func (w *Worker) replayEffect(ctx context.Context, m *jetstream.Msg, t workflow.Task, rec *jetstream.Effect, log zerolog.Logger) {
	if !rec.Done {
		err := &effectUnknownError{key: t.EffectKey}
		log.Warn().Str("effect_key", t.EffectKey).Int("claimed_by_attempt", rec.Attempt).Msg(err.Error())
		w.report(ctx, m, t, "", err, log)
		return
	}
	var herr error
	if rec.Error != "" {
		herr = Permanent(errors.New(rec.Error))
	}
	log.Info().Str("effect_key", t.EffectKey).Int("claimed_by_attempt", rec.Attempt).Msg("once step already ran; reporting its recorded outcome")
	w.report(ctx, m, t, rec.OutputRef, herr, log)
}

func newToken() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
