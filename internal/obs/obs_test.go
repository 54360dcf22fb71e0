package obs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/embedded"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/internal/obs"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/worker"
	"github.com/jetflow/jetflow/workflow"
)

const seqDef = `
name: seq3
version: 1
steps:
  - {name: a, kind: task, task: step, next: b}
  - {name: b, kind: task, task: step, next: c}
  - {name: c, kind: task, task: step}
`

const badDef = `
name: bad
version: 1
steps:
  - {name: only, kind: task, task: breaks, retry: {max_attempts: 1}}
`

const orphanDef = `
name: orphan
version: 1
steps:
  - {name: only, kind: task, task: nobody-serves-this}
`

// scrape fetches url and parses it with the Prometheus text parser.
func scrape(t *testing.T, url string) ([]byte, map[string]*dto.MetricFamily) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	require.NoError(t, err, "the exposition does not parse")
	return body, fams
}

// value returns the value of the series of family name with the given
// labels (counter, gauge, or a histogram's count); -1 when absent.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		ok := true
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				ok = false
			}
		}
		if !ok {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	return -1
}

// promtoolCheck runs `promtool check metrics` on the exposition when
// promtool is installed (Debian package prometheus; .ci/run installs it).
func promtoolCheck(t *testing.T, body []byte) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Log("promtool not installed; skipping `promtool check metrics`")
		return
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "promtool check metrics:\n%s", out)
}

// TestMetricsAfterASmallRun: after 10 runs of a three-task workflow, one
// permanent failure, one panic and one task nobody serves, /metrics of
// the dispatcher and of the worker show exactly those counts, the text
// parses and passes promtool, and the dispatcher's Stats (what `jetflow
// stats` and the stats log line show) are the sums of the same counters.
func TestMetricsAfterASmallRun(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(seqDef)
	e.Register(badDef)
	e.Register(orphanDef)
	d, _ := e.Dispatcher(nil, dispatcher.Config{BacklogInterval: 50 * time.Millisecond})
	w, _ := e.Worker(nil, worker.Config{Concurrency: 4}, map[string]worker.Handler{
		"step": func(context.Context, *worker.Task) (any, error) { return map[string]int{"ok": 1}, nil },
		"breaks": func(_ context.Context, t *worker.Task) (any, error) {
			if t.Instance == workflow.InstanceID("bad", "panic") {
				panic("boom")
			}
			return nil, worker.Permanent(errors.New("no such card"))
		},
	})
	dreg, wreg := obs.NewRegistry(), obs.NewRegistry()
	require.NoError(t, dreg.Register(d.Collector()))
	require.NoError(t, dreg.Register(obs.ClientCollector(e.Client)))
	require.NoError(t, wreg.Register(w.Collector()))
	dsrv := httptest.NewServer(obs.Handler(dreg, d.Ready))
	defer dsrv.Close()
	wsrv := httptest.NewServer(obs.Handler(wreg, w.Ready))
	defer wsrv.Close()

	ctx := context.Background()
	for i := range 10 {
		require.NoError(t, e.Client.PublishStart(ctx, jetstream.Start{Workflow: "seq3", EventKey: fmt.Sprint(i)}))
	}
	require.NoError(t, e.Client.PublishStart(ctx, jetstream.Start{Workflow: "bad", EventKey: "permanent"}))
	require.NoError(t, e.Client.PublishStart(ctx, jetstream.Start{Workflow: "bad", EventKey: "panic"}))
	require.NoError(t, e.Client.PublishStart(ctx, jetstream.Start{Workflow: "orphan", EventKey: "1"}))
	for i := range 10 {
		require.Equal(t, workflow.StatusCompleted, e.WaitTerminal(workflow.InstanceID("seq3", fmt.Sprint(i)), 30*time.Second).Status)
	}
	require.Equal(t, workflow.StatusFailed, e.WaitTerminal(workflow.InstanceID("bad", "permanent"), 30*time.Second).Status)
	require.Equal(t, workflow.StatusFailed, e.WaitTerminal(workflow.InstanceID("bad", "panic"), 30*time.Second).Status)

	// The backlog is refreshed every 50ms: wait for the orphan's task.
	var dfams map[string]*dto.MetricFamily
	var dbody []byte
	jftest.Eventually(t, 30*time.Second, func() bool {
		dbody, dfams = scrape(t, dsrv.URL+"/metrics")
		return value(dfams, "jetflow_task_backlog", "task_type", "nobody-serves-this") == 1
	}, "the backlog of a task type nobody serves never showed its task")
	require.Equal(t, 0.0, value(dfams, "jetflow_task_pulls_waiting", "task_type", "nobody-serves-this"))

	require.Equal(t, 10.0, value(dfams, "jetflow_workflows_started_total", "workflow", "seq3"))
	require.Equal(t, 2.0, value(dfams, "jetflow_workflows_started_total", "workflow", "bad"))
	require.Equal(t, 10.0, value(dfams, "jetflow_workflows_finished_total", "workflow", "seq3", "status", "completed"))
	require.Equal(t, 2.0, value(dfams, "jetflow_workflows_finished_total", "workflow", "bad", "status", "failed"))
	require.Equal(t, 10.0, value(dfams, "jetflow_workflow_duration_seconds", "workflow", "seq3", "status", "completed"))
	for _, step := range []string{"a", "b", "c"} {
		require.Equal(t, 10.0, value(dfams, "jetflow_steps_finished_total", "workflow", "seq3", "step", step, "status", "completed"), step)
	}
	require.Equal(t, 2.0, value(dfams, "jetflow_steps_finished_total", "workflow", "bad", "step", "only", "status", "failed"))
	require.Equal(t, 30.0, value(dfams, "jetflow_tasks_published_total", "task_type", "step"))
	require.Equal(t, 1.0, value(dfams, "jetflow_tasks_published_total", "task_type", "nobody-serves-this"))
	require.Greater(t, value(dfams, "jetflow_event_apply_seconds"), 0.0)
	require.Equal(t, 1.0, value(dfams, "jetflow_nats_connected"))

	s := d.Stats()
	require.Equal(t, uint64(13), s.Started)
	require.Equal(t, uint64(10), s.Completed)
	require.Equal(t, uint64(2), s.Failed)
	require.Equal(t, uint64(31+2), s.TasksPublished)
	require.Equal(t, uint64(13), s.Triggers)
	promtoolCheck(t, dbody)

	wbody, wfams := scrape(t, wsrv.URL+"/metrics")
	require.Equal(t, 30.0, value(wfams, "jetflow_tasks_total", "task_type", "step", "outcome", "ok"))
	require.Equal(t, 1.0, value(wfams, "jetflow_tasks_total", "task_type", "breaks", "outcome", "permanent"))
	require.Equal(t, 1.0, value(wfams, "jetflow_tasks_total", "task_type", "breaks", "outcome", "panic"))
	require.Equal(t, 30.0, value(wfams, "jetflow_task_execution_seconds", "task_type", "step"))
	require.Equal(t, 30.0, value(wfams, "jetflow_task_schedule_to_start_seconds", "task_type", "step"))
	require.Equal(t, 4.0, value(wfams, "jetflow_worker_slots", "state", "busy")+value(wfams, "jetflow_worker_slots", "state", "free"))
	promtoolCheck(t, wbody)
}

func readyz(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url + "/readyz")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// TestReadyz: /readyz is 503 while the process starts, 200 once the
// dispatcher consumes, 503 while NATS is unreachable and 200 again once
// the connection is back; /healthz is 200 throughout.
func TestReadyz(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv, err := embedded.Start(embedded.Config{StoreDir: dir, Port: -1})
	require.NoError(t, err)
	url := srv.ClientURL()
	port, err := strconv.Atoi(url[strings.LastIndex(url, ":")+1:])
	require.NoError(t, err)
	defer func() { srv.Shutdown() }()

	var ready obs.Readiness
	h := httptest.NewServer(obs.Handler(obs.NewRegistry(), ready.Check))
	defer h.Close()
	code, body := readyz(t, h.URL)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "starting")

	client, err := jetstream.Connect(context.Background(), jetstream.Config{URL: url, Logger: jftest.Logger(t)})
	require.NoError(t, err)
	defer client.Close()
	require.NoError(t, client.Provision(context.Background()))
	d, err := dispatcher.New(client, dispatcher.Config{StatsInterval: -1, Logger: jftest.Logger(t)})
	require.NoError(t, err)
	ready.Set(d.Ready)
	code, body = readyz(t, h.URL)
	require.Equal(t, http.StatusServiceUnavailable, code, "ready before Run consumes")
	require.Contains(t, body, "not consuming")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	jftest.Eventually(t, 30*time.Second, func() bool { c, _ := readyz(t, h.URL); return c == http.StatusOK }, "never ready")

	srv.Shutdown()
	jftest.Eventually(t, 30*time.Second, func() bool { c, _ := readyz(t, h.URL); return c == http.StatusServiceUnavailable }, "ready while NATS is down")
	_, body = readyz(t, h.URL)
	require.Contains(t, body, "not connected")
	resp, err := http.Get(h.URL + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	srv, err = embedded.Start(embedded.Config{StoreDir: dir, Port: port})
	require.NoError(t, err)
	jftest.Eventually(t, 30*time.Second, func() bool { c, _ := readyz(t, h.URL); return c == http.StatusOK }, "not ready after NATS came back")
}
