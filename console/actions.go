package console

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// capabilities are the actions the console offers.
type capabilities struct {
	Cancel, Signal, Retry, Replay, Pause bool
	// Why says why actions are not offered (read-only, or what the
	// server said about the credentials).
	Why string
	// rules are what the credentials may publish (a replay needs the
	// dead letter's own subject too).
	rules jetstream.PublishRules
}

// mayReplay reports whether the console offers to replay d.
func (c capabilities) mayReplay(d jetstream.DeadLetter) bool {
	return c.Replay && !d.Replayed && jetstream.Replayable(d) == nil && c.rules.May(d.SourceSubject)
}

// capsTTL is how long the console trusts what the server said about its
// credentials.
const capsTTL = time.Minute

// capabilities asks the server what the console's credentials may
// publish (once a minute at most) and returns the actions they allow.
func (cs *Console) capabilities(ctx context.Context) capabilities {
	if cs.cfg.ReadOnly {
		return capabilities{Why: "read-only console"}
	}
	cs.capMu.Lock()
	defer cs.capMu.Unlock()
	now := cs.cfg.Now()
	if cs.capsLoaded && now.Sub(cs.capsAt) < capsTTL {
		return cs.caps
	}
	rules, err := cs.c.PublishPermissions(ctx, 2*time.Second)
	var caps capabilities
	if err != nil {
		caps.Why = "actions hidden: " + err.Error()
	} else {
		const probe = "_"
		caps.Cancel = rules.May(jetstream.EventKindSubject(probe, workflow.EventCancel))
		caps.Signal = rules.May(jetstream.EventKindSubject(probe, workflow.EventSignal)) &&
			rules.May(jetstream.KeySubject(jetstream.BucketData, workflow.SignalKey(probe, probe, probe)))
		caps.Retry = rules.May(jetstream.EventKindSubject(probe, workflow.EventRetry))
		caps.Replay = rules.May(strings.TrimSuffix(jetstream.DLQReplayedSubjects, "*") + "1")
		caps.Pause = rules.May("$KV." + jetstream.BucketFlow + "." + jetstream.PauseKey(probe))
		caps.rules = rules
		if !caps.Cancel && !caps.Signal && !caps.Retry && !caps.Replay && !caps.Pause {
			caps.Why = "actions hidden: these NATS credentials may not cancel, signal, retry, replay or pause (the operator role may)"
		}
	}
	cs.caps, cs.capsAt, cs.capsLoaded = caps, now, true
	return caps
}

// csrfCookie holds the console's anti-forgery token (double submit: a
// form must carry the cookie's value, which another site cannot read;
// the cookie is SameSite=Strict, so another site's form does not even
// send it).
const csrfCookie = "jetflow_csrf"

// csrfToken returns the browser's token, setting a new one when it has
// none.
func csrfToken(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) == 64 {
		return c.Value
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	tok := hex.EncodeToString(b)
	http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: tok, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
	return tok
}

// errForbidden is an action refused before it was tried.
var errForbidden = errors.New("forbidden")

// checkPost refuses a POST that does not carry the browser's token or
// comes from another origin.
func checkPost(r *http.Request) error {
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return fmt.Errorf("%w: request from another origin (%s)", errForbidden, o)
		}
	}
	c, err := r.Cookie(csrfCookie)
	if err != nil || c.Value == "" {
		return fmt.Errorf("%w: no anti-forgery cookie (load the page again)", errForbidden)
	}
	if subtle.ConstantTimeCompare([]byte(c.Value), []byte(r.PostFormValue("csrf"))) != 1 {
		return fmt.Errorf("%w: the anti-forgery token does not match (load the page again)", errForbidden)
	}
	return nil
}

type confirmPage struct {
	basePage
	Instance *workflow.Instance
	Action   string
	CSRF     string
	Reason   string
	Signal   string
	Payload  string
	Waits    []string // signal names the instance's wait steps wait for
	// Retry: the steps a retry resumes, the steps one may name instead,
	// and the retry count the confirmation was made for.
	RetrySteps []string
	StepNames  []string
	Retries    int
}

func (cs *Console) confirmCancel(w http.ResponseWriter, r *http.Request) {
	cs.confirm(w, r, "cancel")
}

func (cs *Console) confirmSignal(w http.ResponseWriter, r *http.Request) {
	cs.confirm(w, r, "signal")
}

func (cs *Console) confirmRetry(w http.ResponseWriter, r *http.Request) {
	cs.confirm(w, r, "retry")
}

func (cs *Console) confirm(w http.ResponseWriter, r *http.Request, action string) {
	ctx := r.Context()
	caps := cs.capabilities(ctx)
	if (action == "cancel" && !caps.Cancel) || (action == "signal" && !caps.Signal) || (action == "retry" && !caps.Retry) {
		cs.fail(w, r, http.StatusForbidden, fmt.Errorf("%w: %s is not offered (%s)", errForbidden, action, caps.Why))
		return
	}
	inst, _, err := cs.c.GetInstance(ctx, r.PathValue("id"))
	if err != nil {
		cs.failRead(w, r, err)
		return
	}
	p := confirmPage{basePage: cs.base(r, "Confirm "+action, "instances"), Instance: inst, Action: action, CSRF: csrfToken(w, r),
		Reason: "cancelled from the console", Signal: r.URL.Query().Get("name"), Payload: "{}"}
	def, err := cs.c.Definition(ctx, inst.Workflow, inst.Version)
	if err != nil {
		cs.failRead(w, r, err)
		return
	}
	for _, s := range def.Steps {
		if s.Kind == workflow.KindWait {
			p.Waits = append(p.Waits, s.Signal)
		}
		p.StepNames = append(p.StepNames, s.Name)
	}
	if action == "retry" {
		steps, why := workflow.Retryable(def, inst, "")
		if !retryOffered(inst) {
			cs.fail(w, r, http.StatusConflict, fmt.Errorf("instance %s cannot be retried: %s", inst.ID, why))
			return
		}
		p.RetrySteps, p.Retries = steps, inst.Retries
	}
	cs.render(w, r, "confirm", &p)
}

func (cs *Console) doCancel(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := checkPost(r); err != nil {
		cs.fail(w, r, http.StatusForbidden, err)
		return
	}
	if !cs.capabilities(ctx).Cancel {
		cs.fail(w, r, http.StatusForbidden, fmt.Errorf("%w: cancel is not offered", errForbidden))
		return
	}
	id := r.PathValue("id")
	inst, _, err := cs.c.GetInstance(ctx, id)
	if err != nil {
		cs.failRead(w, r, err)
		return
	}
	if inst.Status.Terminal() {
		cs.fail(w, r, http.StatusConflict, fmt.Errorf("instance %s is already %s", inst.ID, inst.Status))
		return
	}
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	if reason == "" {
		reason = "cancelled from the console"
	}
	if err := cs.c.Cancel(ctx, inst.ID, reason); err != nil {
		cs.fail(w, r, http.StatusBadGateway, err)
		return
	}
	cs.log.Info().Str("instance_id", inst.ID).Str("reason", reason).Msg("cancel requested from the console")
	http.Redirect(w, r, "/instances/"+url.PathEscape(inst.ID)+"?done="+url.QueryEscape("cancel requested"), http.StatusSeeOther)
}

func (cs *Console) doSignal(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := checkPost(r); err != nil {
		cs.fail(w, r, http.StatusForbidden, err)
		return
	}
	if !cs.capabilities(ctx).Signal {
		cs.fail(w, r, http.StatusForbidden, fmt.Errorf("%w: signal is not offered", errForbidden))
		return
	}
	id := r.PathValue("id")
	name := strings.TrimSpace(r.PostFormValue("name"))
	payload := strings.TrimSpace(r.PostFormValue("payload"))
	if payload == "" {
		payload = "{}"
	}
	sid := r.PostFormValue("signal_id")
	if sid == "" {
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		sid = hex.EncodeToString(b)
	}
	if _, _, err := cs.c.GetInstance(ctx, id); err != nil {
		cs.failRead(w, r, err)
		return
	}
	if err := cs.c.Signal(ctx, id, name, []byte(payload), sid); err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, jetstream.ErrPermissionDenied) {
			status = http.StatusForbidden
		}
		cs.fail(w, r, status, err)
		return
	}
	cs.log.Info().Str("instance_id", id).Str("signal", name).Msg("signal sent from the console")
	http.Redirect(w, r, "/instances/"+url.PathEscape(id)+"?done="+url.QueryEscape("signal "+name+" sent"), http.StatusSeeOther)
}

// retryOffered reports whether the console offers to retry inst: it
// failed or was cancelled, and is not a bulk child. (Which steps it
// resumes, or that one must be named, the confirmation says.)
func retryOffered(inst *workflow.Instance) bool {
	return (inst.Status == workflow.StatusFailed || inst.Status == workflow.StatusCancelled) && inst.Parent == nil
}

func (cs *Console) doRetry(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := checkPost(r); err != nil {
		cs.fail(w, r, http.StatusForbidden, err)
		return
	}
	if !cs.capabilities(ctx).Retry {
		cs.fail(w, r, http.StatusForbidden, fmt.Errorf("%w: retry is not offered", errForbidden))
		return
	}
	inst, _, err := cs.c.GetInstance(ctx, r.PathValue("id"))
	if err != nil {
		cs.failRead(w, r, err)
		return
	}
	// The confirmation was for the instance as it was then: a form sent
	// twice, or after someone else retried it, does nothing.
	if seen, err := strconv.Atoi(r.PostFormValue("retries")); err != nil || seen != inst.Retries {
		cs.fail(w, r, http.StatusConflict, fmt.Errorf("instance %s changed since the confirmation (retried %d times now): look at it again", inst.ID, inst.Retries))
		return
	}
	def, err := cs.c.Definition(ctx, inst.Workflow, inst.Version)
	if err != nil {
		cs.failRead(w, r, err)
		return
	}
	from := strings.TrimSpace(r.PostFormValue("from"))
	steps, why := workflow.Retryable(def, inst, from)
	if why != "" {
		cs.fail(w, r, http.StatusConflict, fmt.Errorf("instance %s cannot be retried: %s", inst.ID, why))
		return
	}
	if err := cs.c.Retry(ctx, inst, from); err != nil {
		status := http.StatusBadGateway
		if errors.Is(err, jetstream.ErrPermissionDenied) {
			status = http.StatusForbidden
		}
		cs.fail(w, r, status, err)
		return
	}
	cs.log.Info().Str("instance_id", inst.ID).Strs("steps", steps).Msg("retry requested from the console")
	http.Redirect(w, r, "/instances/"+url.PathEscape(inst.ID)+"?done="+url.QueryEscape("retry requested from "+strings.Join(steps, ", ")), http.StatusSeeOther)
}

type replayPage struct {
	basePage
	Letter deadLetterView
	CSRF   string
}

// deadLetterFor reads the dead letter the path names.
func (cs *Console) deadLetterFor(w http.ResponseWriter, r *http.Request) (jetstream.DeadLetter, bool) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 {
		cs.fail(w, r, http.StatusBadRequest, fmt.Errorf("dead letter %q: not a stream sequence", r.PathValue("seq")))
		return jetstream.DeadLetter{}, false
	}
	d, err := cs.c.DeadLetterAt(r.Context(), seq)
	if errors.Is(err, jetstream.ErrNoDeadLetter) {
		cs.fail(w, r, http.StatusNotFound, err)
		return d, false
	}
	if err != nil {
		cs.failRead(w, r, err)
		return d, false
	}
	return d, true
}

func (cs *Console) confirmReplay(w http.ResponseWriter, r *http.Request) {
	d, ok := cs.deadLetterFor(w, r)
	if !ok {
		return
	}
	if caps := cs.capabilities(r.Context()); !caps.mayReplay(d) {
		cs.fail(w, r, http.StatusForbidden, fmt.Errorf("%w: replay of dead letter %d is not offered (replayed already: %t, payload cut: %t; %s)", errForbidden, d.Seq, d.Replayed, d.Truncated, caps.Why))
		return
	}
	p := replayPage{basePage: cs.base(r, "Confirm replay", "dlq"), Letter: viewOf(d), CSRF: csrfToken(w, r)}
	cs.render(w, r, "replay", &p)
}

func (cs *Console) doReplay(w http.ResponseWriter, r *http.Request) {
	if err := checkPost(r); err != nil {
		cs.fail(w, r, http.StatusForbidden, err)
		return
	}
	d, ok := cs.deadLetterFor(w, r)
	if !ok {
		return
	}
	if caps := cs.capabilities(r.Context()); !caps.Replay || !caps.rules.May(d.SourceSubject) {
		cs.fail(w, r, http.StatusForbidden, fmt.Errorf("%w: replay is not offered", errForbidden))
		return
	}
	if err := cs.c.ReplayDeadLetter(r.Context(), d); err != nil {
		status := http.StatusBadGateway
		switch {
		case errors.Is(err, jetstream.ErrAlreadyReplayed), errors.Is(err, jetstream.ErrNotReplayable):
			status = http.StatusConflict
		case errors.Is(err, jetstream.ErrPermissionDenied):
			status = http.StatusForbidden
		}
		cs.fail(w, r, status, err)
		return
	}
	cs.log.Info().Uint64("dlq_seq", d.Seq).Str("subject", d.SourceSubject).Msg("dead letter replayed from the console")
	http.Redirect(w, r, "/dlq?done="+url.QueryEscape(fmt.Sprintf("dead letter %d replayed on %s", d.Seq, d.SourceSubject)), http.StatusSeeOther)
}

type pausePage struct {
	basePage
	Workflow string
	Pause    bool // true: pause; false: resume
	Paused   bool // the workflow is paused now
	Since    time.Time
	CSRF     string
}

// confirmPause asks to confirm a pause or a resume of a workflow.
func (cs *Console) confirmPause(w http.ResponseWriter, r *http.Request, pause bool) {
	ctx := r.Context()
	if caps := cs.capabilities(ctx); !caps.Pause {
		cs.fail(w, r, http.StatusForbidden, fmt.Errorf("%w: pause and resume are not offered (%s)", errForbidden, caps.Why))
		return
	}
	wf, ok := cs.knownWorkflow(w, r)
	if !ok {
		return
	}
	st, err := cs.c.PauseOf(ctx, wf)
	if err != nil {
		cs.failRead(w, r, err)
		return
	}
	title := "Confirm resume"
	if pause {
		title = "Confirm pause"
	}
	p := pausePage{basePage: cs.base(r, title, "workflows"), Workflow: wf, Pause: pause, Paused: st.Paused, Since: st.Since, CSRF: csrfToken(w, r)}
	cs.render(w, r, "pause", &p)
}

func (cs *Console) confirmPauseOn(w http.ResponseWriter, r *http.Request) {
	cs.confirmPause(w, r, true)
}
func (cs *Console) confirmPauseOff(w http.ResponseWriter, r *http.Request) {
	cs.confirmPause(w, r, false)
}
func (cs *Console) doPauseOn(w http.ResponseWriter, r *http.Request)  { cs.doPause(w, r, true) }
func (cs *Console) doPauseOff(w http.ResponseWriter, r *http.Request) { cs.doPause(w, r, false) }

// knownWorkflow returns the workflow the path names, if it is registered.
func (cs *Console) knownWorkflow(w http.ResponseWriter, r *http.Request) (string, bool) {
	wf := r.PathValue("name")
	defs, err := cs.c.Definitions(r.Context())
	if err != nil {
		cs.failRead(w, r, err)
		return "", false
	}
	for _, d := range defs {
		if d.Name == wf {
			return wf, true
		}
	}
	cs.fail(w, r, http.StatusNotFound, fmt.Errorf("unknown workflow %s", wf))
	return "", false
}

// doPause pauses or resumes a workflow (jetflow pause, resume): a
// compare-and-swap of its pause record; pausing a paused workflow
// changes nothing.
func (cs *Console) doPause(w http.ResponseWriter, r *http.Request, pause bool) {
	ctx := r.Context()
	if err := checkPost(r); err != nil {
		cs.fail(w, r, http.StatusForbidden, err)
		return
	}
	if !cs.capabilities(ctx).Pause {
		cs.fail(w, r, http.StatusForbidden, fmt.Errorf("%w: pause and resume are not offered", errForbidden))
		return
	}
	wf, ok := cs.knownWorkflow(w, r)
	if !ok {
		return
	}
	_, changed, err := cs.c.SetPaused(ctx, wf, pause, cs.cfg.Now())
	if err != nil {
		status := http.StatusBadGateway
		if errors.Is(err, jetstream.ErrPermissionDenied) {
			status = http.StatusForbidden
		}
		cs.fail(w, r, status, err)
		return
	}
	what := "resumed"
	if pause {
		what = "paused"
	}
	msg := "workflow " + wf + " " + what
	if !changed {
		msg = "workflow " + wf + " was already " + what + "; nothing changed"
		if !pause {
			msg = "workflow " + wf + " is not paused; nothing changed"
		}
	}
	cs.log.Info().Str("workflow", wf).Bool("paused", pause).Bool("changed", changed).Msg("pause changed from the console")
	http.Redirect(w, r, "/workflows?done="+url.QueryEscape(msg)+"#wf-"+url.PathEscape(wf), http.StatusSeeOther)
}
