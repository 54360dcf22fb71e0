package console_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/console"
	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/worker"
	"github.com/jetflow/jetflow/workflow"
)

// Definitions the tests run.
const (
	// order: a task that fails on its first attempt and is retried, then
	// a wait for a signal.
	orderDef = `name: order
version: 1
description: charge, then wait for shipping
trigger: {subject: shop.orders, key: id}
steps:
  - name: charge
    kind: task
    task: flaky
    retry: {max_attempts: 3, initial_interval: 10ms}
    next: ship
    on_failure: refund
  - {name: ship, kind: wait, signal: shipped}
  - {name: refund, kind: task, task: echo}
`
	// route: every edge kind: parallel branches, a switch's cases and
	// default, next and on_failure.
	routeDef = `name: route
version: 2
steps:
  - name: split
    kind: parallel
    branches: [left, right]
    next: decide
  - {name: left, kind: task, task: echo}
  - {name: right, kind: task, task: echo, on_failure: recover}
  - name: decide
    kind: switch
    cases:
      - {when: "input.big == true", next: big}
    default: small
  - {name: big, kind: task, task: echo}
  - {name: small, kind: task, task: echo}
  - {name: recover, kind: task, task: echo}
`
	mailDef = "name: mail\nversion: 1\nsteps:\n  - {name: send, kind: task, task: echo}\n"
	fanDef  = "name: fan\nversion: 1\nsteps:\n  - {name: notify, kind: bulk, workflow: mail, items: input.to}\n"
	holdDef = "name: hold\nversion: 1\nsteps:\n  - {name: block, kind: wait, signal: go}\n"
	// gate: a task that fails for good until the test opens the gate.
	gateDef = "name: gate\nversion: 1\nsteps:\n  - {name: pay, kind: task, task: gate, retry: {max_attempts: 1}, next: done}\n  - {name: done, kind: task, task: echo}\n"
)

type env struct {
	*jftest.Env
	srv  *httptest.Server
	cs   *console.Console
	gate *atomic.Bool // the gate task succeeds once set
}

// setup starts a server with a dispatcher and a worker (echo; flaky,
// which fails each step's first attempt) and a console over it.
func setup(t *testing.T, cfg console.Config) *env {
	t.Helper()
	e := jftest.Start(t, jetstream.Config{})
	for _, d := range []string{orderDef, routeDef, mailDef, fanDef, holdDef, gateDef} {
		e.Register(d)
	}
	e.Dispatcher(nil, dispatcher.Config{Name: "d1", RepairInterval: 200 * time.Millisecond})
	echo := func(_ context.Context, t *worker.Task) (any, error) { return t.Input() }
	flaky := func(_ context.Context, t *worker.Task) (any, error) {
		if t.Attempt == 1 {
			return nil, errors.New("card network timeout")
		}
		return map[string]any{"charged": true, "attempt": t.Attempt}, nil
	}
	gate := &atomic.Bool{}
	gated := func(_ context.Context, t *worker.Task) (any, error) {
		if !gate.Load() {
			return nil, errors.New("gate closed")
		}
		return map[string]any{"paid": true}, nil
	}
	e.Worker(nil, worker.Config{Name: "w1", Concurrency: 8}, map[string]worker.Handler{"echo": echo, "flaky": flaky, "gate": gated})
	cfg.Client = e.Client
	cs, err := console.New(cfg)
	require.NoError(t, err)
	srv := httptest.NewServer(cs.Handler())
	t.Cleanup(srv.Close)
	return &env{Env: e, srv: srv, cs: cs, gate: gate}
}

func (e *env) start(wf, key, payload string) string {
	e.T.Helper()
	require.NoError(e.T, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: wf, EventKey: key, Payload: []byte(payload)}))
	id := workflow.InstanceID(wf, key)
	jftest.Eventually(e.T, 30*time.Second, func() bool { return e.Instance(id) != nil }, "instance %s was not created", id)
	return id
}

// get fetches a page and returns its status and body.
func get(t testing.TB, c *http.Client, u string) (int, string) {
	t.Helper()
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func (e *env) page(path string) string {
	e.T.Helper()
	status, body := get(e.T, nil, e.srv.URL+path)
	require.Equal(e.T, http.StatusOK, status, body)
	return body
}

// TestOverview: rates from the dispatchers' counters, the backlog per
// task type, dead letters, and who is connected.
func TestOverview(t *testing.T) {
	t.Parallel()
	e := setup(t, console.Config{})
	ctx := context.Background()
	// A task type nobody serves keeps a backlog; a malformed trigger is
	// dead-lettered.
	e.Register("name: stuck\nversion: 1\nsteps:\n  - {name: s, kind: task, task: nobody-serves}\n")
	e.start("stuck", "1", `{}`)
	require.NoError(t, e.Client.PublishRaw(ctx, "shop.orders", []byte("not json")))
	jftest.Eventually(t, 30*time.Second, func() bool {
		u, err := e.Client.StreamState(ctx, jetstream.StreamDLQ)
		return err == nil && u.Msgs == 1
	}, "the malformed trigger was not dead-lettered")
	var body string
	jftest.Eventually(t, 30*time.Second, func() bool {
		body = e.page("/")
		return strings.Contains(body, `id="dispatcher-count">1<`) && strings.Contains(body, `id="worker-count">1<`)
	}, "the overview does not show the dispatcher and the worker")
	require.Contains(t, body, `id="dead-letters">1<`)
	require.Regexp(t, `data-task="nobody-serves"><td>nobody-serves <span class="tag">no worker yet</span></td><td class="num">1</td>`, body)
	require.Contains(t, body, "<td>d1</td>", "the dispatcher's counters")

	// A second read sees the counters move: a rate over the time between.
	for i := range 5 {
		e.start("order", fmt.Sprint("rate-", i), `{}`)
	}
	jftest.Eventually(t, 30*time.Second, func() bool {
		body = e.page("/")
		m := regexp.MustCompile(`id="rate-started">([0-9.]+)/s<`).FindStringSubmatch(body)
		return m != nil && m[1] != "0.0" && strings.Contains(body, "Rates over the last")
	}, "no rate of started instances")
}

// TestWorkflowsDrawTheirGraphs: each definition's steps and every kind
// of edge are drawn, and the version page lists the steps and trigger.
func TestWorkflowsDrawTheirGraphs(t *testing.T) {
	t.Parallel()
	e := setup(t, console.Config{})
	body := e.page("/workflows")
	for _, name := range []string{"order", "route", "fan", "mail"} {
		require.Contains(t, body, `id="wf-`+name+`"`)
	}
	body = e.page("/workflows/route/2")
	for _, step := range []string{"split", "left", "right", "decide", "big", "small", "recover"} {
		require.Contains(t, body, `data-step="`+step+`"`, "step %s is drawn", step)
	}
	for _, edge := range []string{"split → left (branch)", "split → right (branch)", "split → decide (next)", "decide → big (case)", "decide → small (case)", "right → recover (failure)"} {
		require.Contains(t, body, "<title>"+edge+"</title>", "edge %s is drawn", edge)
	}
	body = e.page("/workflows/order/1")
	require.Contains(t, body, "shop.orders", "the trigger")
	require.Contains(t, body, "charge → refund (failure)")
	status, _ := get(t, nil, e.srv.URL+"/workflows/order/9")
	require.Equal(t, http.StatusNotFound, status)
	status, _ = get(t, nil, e.srv.URL+"/workflows/order/x")
	require.Equal(t, http.StatusBadRequest, status)
}

// TestInstancesFilterAndPage: filters by workflow, status, event key and
// creation time, and pages the newest first.
func TestInstancesFilterAndPage(t *testing.T) {
	t.Parallel()
	e := setup(t, console.Config{PageSize: 2})
	for i := range 3 {
		id := e.start("mail", fmt.Sprint("m", i), `{}`)
		e.WaitTerminal(id, 30*time.Second)
	}
	e.start("hold", "h1", `{}`)
	body := e.page("/instances")
	require.Contains(t, body, "4 matching of 4 instances")
	require.Contains(t, body, "page 1 of 2")
	require.Contains(t, body, `id="next"`)
	require.Equal(t, 2, strings.Count(body, "<tr data-id="))
	require.Contains(t, body, `data-id="`+workflow.InstanceID("hold", "h1")+`"`, "newest first")

	body = e.page("/instances?workflow=mail&page=1")
	require.Contains(t, body, "3 matching of 4")
	require.Equal(t, 1, strings.Count(body, "<tr data-id="))
	require.Contains(t, body, `id="prev"`)

	body = e.page("/instances?status=running")
	require.Contains(t, body, "1 matching of 4")
	require.Contains(t, body, workflow.InstanceID("hold", "h1"))

	body = e.page("/instances?key=m1")
	require.Contains(t, body, "1 matching of 4")
	require.Contains(t, body, workflow.InstanceID("mail", "m1"))

	body = e.page("/instances?since=" + url.QueryEscape(time.Now().Add(time.Hour).Format(time.RFC3339)))
	require.Contains(t, body, "0 matching of 4")
	body = e.page("/instances?since=1h&status=completed")
	require.Contains(t, body, "3 matching of 4")
	body = e.page("/instances?since=yesterday-ish")
	require.Contains(t, body, "use RFC 3339")
}

// TestInstanceTimeline: a step retried once shows each attempt as its
// own block, the failed one with its error; the wait step waiting; the
// explanation says what it waits for; inputs and outputs as JSON.
func TestInstanceTimeline(t *testing.T) {
	t.Parallel()
	e := setup(t, console.Config{})
	id := e.start("order", "o-1", `{"id":"o-1","amount":42}`)
	jftest.Eventually(t, 30*time.Second, func() bool {
		in := e.Instance(id)
		return in != nil && in.Steps["ship"] != nil
	}, "the order does not reach the wait step")
	body := e.page("/instances/" + id)
	require.Contains(t, body, `<svg class="timeline"`)
	require.Contains(t, body, `<g class="row" data-step="charge"><text class="label" x="8" y="`)
	require.Contains(t, body, "charge ×2", "the retried step is labelled with its attempts")
	require.Contains(t, body, `class="seg failed attempt"`, "the first attempt, a block of its own")
	require.Contains(t, body, "charge: attempt 1 failed after", "the first attempt with its error")
	require.Contains(t, body, "card network timeout")
	require.Contains(t, body, `class="seg completed attempt"`, "the second attempt, a block of its own")
	require.Contains(t, body, "charge: attempt 2 completed")
	require.Contains(t, body, "(worker w1)")
	require.Contains(t, body, `<g class="row" data-step="ship">`)
	require.Contains(t, body, `class="seg running open"`, "the wait step is open")
	require.Contains(t, body, `waits for signal &#34;shipped&#34;`, "the explanation")
	require.Contains(t, body, `&#34;amount&#34;: 42`, "the input as formatted JSON")
	require.Contains(t, body, `&#34;charged&#34;: true`, "the step output")
	require.Contains(t, body, `data-refresh="2000"`, "a running instance updates itself")
	require.Contains(t, body, `class="node kind-task st-completed" data-step="charge"`, "the graph shows the step states")
	require.Contains(t, body, `class="node kind-task st-not-reached" data-step="refund"`)
	status, _ := get(t, nil, e.srv.URL+"/instances/nope")
	require.Equal(t, http.StatusNotFound, status)
}

// TestBulkProgressAndChildren: a bulk step's progress bar and its
// children, page by page.
func TestBulkProgressAndChildren(t *testing.T) {
	t.Parallel()
	e := setup(t, console.Config{PageSize: 2})
	id := e.start("fan", "f", `{"to":["a","b","c"]}`)
	require.Equal(t, workflow.StatusCompleted, e.WaitTerminal(id, 30*time.Second).Status)
	body := e.page("/instances/" + id)
	require.Contains(t, body, `<progress max="3" value="3">`)
	require.Contains(t, body, "/instances/"+id+"/children/notify")
	body = e.page("/instances/" + id + "/children/notify")
	require.Contains(t, body, "page 1 of 2")
	require.Equal(t, 2, strings.Count(body, `<span class="status completed">completed</span>`))
	require.Contains(t, body, workflow.ChildInstanceID("mail", id, "notify", 0))
	body = e.page("/instances/" + id + "/children/notify?page=1")
	require.Contains(t, body, workflow.ChildInstanceID("mail", id, "notify", 2))
	status, _ := get(t, nil, e.srv.URL+"/instances/"+id+"/children/nostep")
	require.Equal(t, http.StatusNotFound, status)
}

// TestDeadLetters: reasons and a payload preview.
func TestDeadLetters(t *testing.T) {
	t.Parallel()
	e := setup(t, console.Config{})
	ctx := context.Background()
	require.NoError(t, e.Client.PublishRaw(ctx, "shop.orders", []byte(`{"no_id":true}`)))
	var body string
	jftest.Eventually(t, 30*time.Second, func() bool {
		body = e.page("/dlq")
		return strings.Contains(body, `class="dead"`)
	}, "no dead letter listed")
	require.Contains(t, body, "shop.orders")
	require.Regexp(t, `class="error reason">[^<]*id`, body, "the reason names the missing key")
	require.Contains(t, body, `&#34;no_id&#34;: true`, "the payload, indented")
}

// TestReplayFromTheConsole: a start for a workflow nobody registered is
// dead-lettered; once the definition is registered, the confirmed replay
// starts exactly one instance; the dead letter is then marked replayed
// and a second replay is refused.
func TestReplayFromTheConsole(t *testing.T) {
	t.Parallel()
	e := setup(t, console.Config{})
	ctx := context.Background()
	require.NoError(t, e.Client.PublishStart(ctx, jetstream.Start{Workflow: "later", EventKey: "k1", Payload: []byte(`{"x":1}`)}))
	var dls []jetstream.DeadLetter
	jftest.Eventually(t, 30*time.Second, func() bool {
		var err error
		dls, err = e.Client.DeadLetters(ctx, 10)
		return err == nil && len(dls) == 1
	}, "the start was not dead-lettered")
	seq := fmt.Sprint(dls[0].Seq)
	body := e.page("/dlq")
	require.Contains(t, body, `id="replay-`+seq+`"`)
	e.Register("name: later\nversion: 1\nsteps:\n  - {name: a, kind: task, task: echo}\n")

	jar, _ := cookiejar.New(nil)
	c := noRedirect(jar)
	_, form := get(t, c, e.srv.URL+"/dlq/"+seq+"/replay")
	require.Contains(t, form, "jetflow.start.later")
	vals := url.Values{"csrf": {csrfOf(t, form)}}
	resp, err := c.PostForm(e.srv.URL+"/dlq/"+seq+"/replay", vals)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	id := workflow.InstanceID("later", "k1")
	require.Equal(t, workflow.StatusCompleted, e.WaitTerminal(id, 30*time.Second).Status)

	resp, err = c.PostForm(e.srv.URL+"/dlq/"+seq+"/replay", vals)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusConflict, resp.StatusCode, "a second replay is refused")
	body = e.page("/dlq")
	require.NotContains(t, body, `id="replay-`+seq+`"`)
	require.Contains(t, body, `<span class="tag">replayed</span>`)
	require.Contains(t, e.page("/"), `id="dead-letters">1<`, "replay marks are not counted as dead letters")
	status, _ := get(t, nil, e.srv.URL+"/dlq/999/replay")
	require.Equal(t, http.StatusNotFound, status)
}

// csrfOf reads the anti-forgery token from a confirmation form.
func csrfOf(t *testing.T, body string) string {
	t.Helper()
	m := regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`).FindStringSubmatch(body)
	require.NotNil(t, m, "no token in the form: %s", body)
	return m[1]
}

func noRedirect(jar http.CookieJar) *http.Client {
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// TestCancelNeedsConfirmationAndToken: cancel is a link to a
// confirmation form; a POST without the browser's token or from another
// origin changes nothing; the confirmed one cancels the instance.
func TestCancelNeedsConfirmationAndToken(t *testing.T) {
	t.Parallel()
	e := setup(t, console.Config{})
	id := e.start("hold", "c1", `{}`)
	body := e.page("/instances/" + id)
	require.Contains(t, body, `id="action-cancel"`)
	require.Contains(t, body, `href="/instances/`+id+`/signal?name=go"`)

	jar, _ := cookiejar.New(nil)
	c := noRedirect(jar)
	status, form := get(t, c, e.srv.URL+"/instances/"+id+"/cancel")
	require.Equal(t, http.StatusOK, status)
	token := csrfOf(t, form)
	post := func(c *http.Client, vals url.Values, origin string) int {
		req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/instances/"+id+"/cancel", strings.NewReader(vals.Encode()))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := c.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	// Forgeries: no cookie (another site's form), a wrong token, another origin.
	require.Equal(t, http.StatusForbidden, post(noRedirect(nil), url.Values{"csrf": {token}}, ""))
	require.Equal(t, http.StatusForbidden, post(c, url.Values{"csrf": {strings.Repeat("0", 64)}}, ""))
	require.Equal(t, http.StatusForbidden, post(c, url.Values{"csrf": {token}}, "http://evil.example"))
	require.Equal(t, workflow.StatusRunning, e.Instance(id).Status, "a refused POST changed nothing")

	require.Equal(t, http.StatusSeeOther, post(c, url.Values{"csrf": {token}, "reason": {"test says stop"}}, e.srv.URL))
	in := e.WaitTerminal(id, 30*time.Second)
	require.Equal(t, workflow.StatusCancelled, in.Status)
	require.Equal(t, "test says stop", in.Error)
	body = e.page("/instances/" + id)
	require.NotContains(t, body, `id="action-cancel"`, "no cancel for an ended instance")
}

// TestSignalFromTheConsole: the confirmed signal resumes the wait step.
func TestSignalFromTheConsole(t *testing.T) {
	t.Parallel()
	e := setup(t, console.Config{})
	id := e.start("hold", "s1", `{}`)
	jar, _ := cookiejar.New(nil)
	c := noRedirect(jar)
	_, form := get(t, c, e.srv.URL+"/instances/"+id+"/signal?name=go")
	require.Contains(t, form, `name="name" value="go"`)
	resp, err := c.PostForm(e.srv.URL+"/instances/"+id+"/signal", url.Values{"csrf": {csrfOf(t, form)}, "name": {"go"}, "payload": {`{"ok":1}`}})
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, workflow.StatusCompleted, e.WaitTerminal(id, 30*time.Second).Status)

	// A bad payload is refused with the reason.
	id = e.start("hold", "s2", `{}`)
	_, form = get(t, c, e.srv.URL+"/instances/"+id+"/signal")
	resp, err = c.PostForm(e.srv.URL+"/instances/"+id+"/signal", url.Values{"csrf": {csrfOf(t, form)}, "name": {"go"}, "payload": {`{not json`}})
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, string(b))
	require.Equal(t, workflow.StatusRunning, e.Instance(id).Status)
}

// TestRetryFromTheConsole: a failed instance offers Retry; the
// confirmed retry continues it from its failed step with the same id; a
// confirmation sent again after that retry (the instance failed again
// meanwhile) is refused; a new one completes it.
func TestRetryFromTheConsole(t *testing.T) {
	t.Parallel()
	e := setup(t, console.Config{})
	id := e.start("gate", "g1", `{}`)
	require.Equal(t, workflow.StatusFailed, e.WaitTerminal(id, 30*time.Second).Status)
	body := e.page("/instances/" + id)
	require.Contains(t, body, `id="action-retry"`)
	require.NotContains(t, body, `id="action-cancel"`)

	jar, _ := cookiejar.New(nil)
	c := noRedirect(jar)
	retry := func(form string) *http.Response {
		t.Helper()
		m := regexp.MustCompile(`name="retries" value="([0-9]+)"`).FindStringSubmatch(form)
		require.NotNil(t, m)
		resp, err := c.PostForm(e.srv.URL+"/instances/"+id+"/retry", url.Values{"csrf": {csrfOf(t, form)}, "retries": {m[1]}})
		require.NoError(t, err)
		resp.Body.Close()
		return resp
	}
	_, first := get(t, c, e.srv.URL+"/instances/"+id+"/retry")
	require.Contains(t, first, "its failed or interrupted steps: pay")
	require.Contains(t, first, `name="retries" value="0"`)
	resp := retry(first)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Location"), url.QueryEscape("retry requested from pay"))
	var in *workflow.Instance
	jftest.Eventually(t, 30*time.Second, func() bool {
		in = e.Instance(id)
		return in.Retries == 1 && in.Status == workflow.StatusFailed
	}, "the retried instance does not fail again (gate closed): %+v", in)

	// The first confirmation again: refused, nothing sent.
	require.Equal(t, http.StatusConflict, retry(first).StatusCode)
	require.Equal(t, 1, e.Instance(id).Retries)

	// A new confirmation, the gate open: it completes.
	e.gate.Store(true)
	_, second := get(t, c, e.srv.URL+"/instances/"+id+"/retry")
	require.Equal(t, http.StatusSeeOther, retry(second).StatusCode)
	jftest.Eventually(t, 30*time.Second, func() bool {
		in = e.Instance(id)
		return in.Status == workflow.StatusCompleted
	}, "the retried instance does not complete: %+v", in)
	require.Equal(t, 2, in.Retries)
	require.Equal(t, workflow.StepCompleted, in.Steps["done"].Status)
	body = e.page("/instances/" + id)
	require.NotContains(t, body, `id="action-retry"`, "no retry for a completed instance")
	require.Equal(t, http.StatusConflict, retry(second).StatusCode)
}

// TestReadOnlyOffersNoAction: --read-only hides the actions and refuses
// them.
func TestReadOnlyOffersNoAction(t *testing.T) {
	t.Parallel()
	e := setup(t, console.Config{ReadOnly: true})
	id := e.start("hold", "r1", `{}`)
	body := e.page("/instances/" + id)
	require.NotContains(t, body, `id="action-cancel"`)
	require.NotContains(t, body, `id="action-signal"`)
	require.Contains(t, body, "read-only console")
	body = e.page("/workflows")
	require.NotContains(t, body, `id="pause-hold"`, "no pause on a read-only console")
	status, _ := get(t, nil, e.srv.URL+"/workflows/hold/pause")
	require.Equal(t, http.StatusForbidden, status)
	status, _ = get(t, nil, e.srv.URL+"/instances/"+id+"/cancel")
	require.Equal(t, http.StatusForbidden, status)
	jar, _ := cookiejar.New(nil)
	u, _ := url.Parse(e.srv.URL)
	jar.SetCookies(u, []*http.Cookie{{Name: "jetflow_csrf", Value: strings.Repeat("a", 64)}})
	resp, err := noRedirect(jar).PostForm(e.srv.URL+"/instances/"+id+"/cancel", url.Values{"csrf": {strings.Repeat("a", 64)}})
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Equal(t, workflow.StatusRunning, e.Instance(id).Status)
}

// TestAssetsAreEmbeddedAndHeadersStrict: the stylesheet and script come
// from the binary; pages forbid framing and foreign content.
func TestAssetsAreEmbeddedAndHeadersStrict(t *testing.T) {
	t.Parallel()
	e := setup(t, console.Config{})
	for _, p := range []string{"/static/console.css", "/static/live.js", "/static/favicon.svg"} {
		status, body := get(t, nil, e.srv.URL+p)
		require.Equal(t, http.StatusOK, status, p)
		require.NotEmpty(t, body)
	}
	resp, err := http.Get(e.srv.URL + "/")
	require.NoError(t, err)
	resp.Body.Close()
	require.Contains(t, resp.Header.Get("Content-Security-Policy"), "default-src 'self'")
	require.Equal(t, "DENY", resp.Header.Get("X-Frame-Options"))
	b := e.page("/")
	require.NotRegexp(t, `(src|href)="https?://`, b, "nothing is fetched from elsewhere")
}

// TestServeRefusesRemoteAddresses: no login, so loopback only unless
// allowed.
func TestServeRefusesRemoteAddresses(t *testing.T) {
	t.Parallel()
	err := console.Serve(context.Background(), "0.0.0.0:0", false, http.NotFoundHandler(), jftest.Logger(t), nil)
	require.ErrorIs(t, err, console.ErrRemoteListen)
}

// TestPauseFromTheConsole: the workflows page offers Pause; the
// confirmed pause (with the token) holds the workflow's new instances,
// the page shows it paused and offers Resume, and the confirmed resume
// lets them complete. A POST without the token changes nothing.
func TestPauseFromTheConsole(t *testing.T) {
	t.Parallel()
	e := setup(t, console.Config{})
	body := e.page("/workflows")
	require.Contains(t, body, `id="pause-mail"`)
	require.NotContains(t, body, `id="paused-mail"`)

	jar, _ := cookiejar.New(nil)
	c := noRedirect(jar)
	status, form := get(t, c, e.srv.URL+"/workflows/mail/pause")
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, form, "Pause workflow <code>mail</code>?")
	token := csrfOf(t, form)
	resp, err := noRedirect(nil).PostForm(e.srv.URL+"/workflows/mail/pause", url.Values{"csrf": {token}})
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "no cookie: refused")
	st, err := e.Client.PauseOf(context.Background(), "mail")
	require.NoError(t, err)
	require.False(t, st.Paused, "a refused POST changed nothing")

	resp, err = c.PostForm(e.srv.URL+"/workflows/mail/pause", url.Values{"csrf": {token}})
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Location"), "workflow+mail+paused")
	st, err = e.Client.PauseOf(context.Background(), "mail")
	require.NoError(t, err)
	require.True(t, st.Paused)
	c2, err := e.Client.AwaitPause(context.Background(), st.Revision, 10*time.Second)
	require.NoError(t, err)
	require.Equal(t, []string{"d1"}, c2.Confirmed)

	body = e.page("/workflows")
	require.Contains(t, body, `id="paused-mail"`)
	require.Contains(t, body, `id="resume-mail"`)
	id := e.start("mail", "m-held", `{}`)
	jftest.Eventually(t, 30*time.Second, func() bool {
		in := e.Instance(id)
		return in != nil && in.Steps["send"] != nil && in.Steps["send"].Gate == workflow.GatePaused
	}, "the instance is not held")
	body = e.page("/instances/" + id)
	require.Contains(t, body, "waits because workflow mail is paused")
	require.Contains(t, body, `class="seg waiting gate open"`, "the held attempt, waiting at its gate")

	status, form = get(t, c, e.srv.URL+"/workflows/mail/resume")
	require.Equal(t, http.StatusOK, status)
	resp, err = c.PostForm(e.srv.URL+"/workflows/mail/resume", url.Values{"csrf": {csrfOf(t, form)}})
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, workflow.StatusCompleted, e.WaitTerminal(id, 30*time.Second).Status)
	status, _ = get(t, nil, e.srv.URL+"/workflows/nope/pause")
	require.Equal(t, http.StatusNotFound, status)
}
