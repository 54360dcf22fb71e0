// Package crashtest kills a process that embeds the NATS server, the
// dispatcher and a worker with SIGKILL while it runs workflows, restarts
// it at once on the same store, and checks from the stored state that
// every workflow finished exactly as it should, within the stated bound.
//
// A crash of the process that embeds the server is harsher than a
// dispatcher's: the server loses what it had not written out, in
// particular its consumers' recent acks, so messages that were applied
// and acknowledged come back, with a delivery count of 1.
//
// The default run is one fan-out of 3,000 children and one batch of 2,000
// three-task workflows, two kills each. JETFLOW_CRASH_ALL=1 runs every
// fan-out scenario (no window, windows of 100 and 5,000, wait_all with
// failing children, fail_fast); JETFLOW_CRASH_RUNS (default 1) repeats
// them and JETFLOW_CRASH_N (default 3000) sets their size;
// JETFLOW_CRASH_SEED replays the kill points of a run.
package crashtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/embedded"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/worker"
	"github.com/jetflow/jetflow/workflow"
)

// childEnv carries the JSON-encoded childConfig of a crashing process.
const childEnv = "JETFLOW_CRASHTEST_CHILD"

// childConfig is what a crashing process runs.
type childConfig struct {
	StoreDir string
	Port     int
	// Definitions are registered at start (idempotent).
	Definitions []string
	// Timings, short so the test is quick; the bound the test checks is
	// derived from them.
	AckWait        time.Duration
	WorkerAckWait  time.Duration
	RepairInterval time.Duration
	StaleBulk      time.Duration
	LogFile        string
}

// Timings of the process under test. StaleTask is an hour: an instance
// that would wait for it fails the test's deadline.
const (
	ackWait        = 5 * time.Second
	workerAckWait  = 5 * time.Second
	repairInterval = time.Second
	staleBulk      = 5 * time.Second
	staleTask      = time.Hour
)

func TestMain(m *testing.M) {
	if cfg := os.Getenv(childEnv); cfg != "" {
		os.Exit(runChild(cfg))
	}
	os.Exit(m.Run())
}

// runChild is the process under test: an embedded server with a store
// directory, a dispatcher and a worker, as `dispatcher --worker` runs
// them.
func runChild(raw string) int {
	var cfg childConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "crashtest child:", err)
		return 2
	}
	log := zerolog.Nop()
	if cfg.LogFile != "" {
		f, err := os.OpenFile(cfg.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err == nil {
			defer f.Close()
			log = zerolog.New(f).Level(zerolog.InfoLevel).With().Timestamp().Int("pid", os.Getpid()).Logger()
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := child(ctx, cfg, log); err != nil {
		fmt.Fprintln(os.Stderr, "crashtest child:", err)
		return 1
	}
	return 0
}

func child(ctx context.Context, cfg childConfig, log zerolog.Logger) error {
	srv, err := embedded.Start(embedded.Config{StoreDir: cfg.StoreDir, Port: cfg.Port})
	if err != nil {
		return err
	}
	defer srv.Shutdown()
	client, err := jetstream.Connect(ctx, jetstream.Config{Server: srv, DispatcherAckWait: cfg.AckWait, WorkerAckWait: cfg.WorkerAckWait, Logger: log})
	if err != nil {
		return err
	}
	defer client.Close()
	if err := client.Provision(ctx); err != nil {
		return err
	}
	for _, src := range cfg.Definitions {
		def, err := workflow.Parse("crash.yaml", []byte(src))
		if err != nil {
			return err
		}
		if err := client.PutDefinition(ctx, def, []byte(src)); err != nil {
			return err
		}
	}
	d, err := dispatcher.New(client, dispatcher.Config{
		RepairInterval: cfg.RepairInterval, StaleBulk: cfg.StaleBulk, StaleTask: staleTask,
		StatsInterval: -1, Logger: log,
	})
	if err != nil {
		return err
	}
	w, err := worker.New(jftest.App(client), worker.Config{Concurrency: 32, Logger: log})
	if err != nil {
		return err
	}
	if err := w.Handle("work", work); err != nil {
		return err
	}
	errc := make(chan error, 2)
	go func() { errc <- d.Run(ctx) }()
	go func() { errc <- w.Run(ctx) }()
	fmt.Println("ready") // the test waits for this line
	return errors.Join(<-errc, <-errc)
}

// work is the task of every step: it takes input.ms milliseconds, fails
// permanently when input.fail is true and returns its input otherwise.
func work(ctx context.Context, t *worker.Task) (any, error) {
	in, err := t.Input()
	if err != nil {
		return nil, worker.Permanent(err)
	}
	m, _ := in.(map[string]any)
	if ms, ok := m["ms"].(int64); ok && ms > 0 {
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if m["fail"] == true {
		return nil, worker.Permanent(fmt.Errorf("item %v fails", m["i"]))
	}
	return in, nil
}

// proc is the process under test, restarted after every kill.
type proc struct {
	t   *testing.T
	cfg childConfig
	cmd *exec.Cmd
	// starts counts the processes started.
	starts int
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startProc(t *testing.T, defs ...string) *proc {
	dir := t.TempDir()
	p := &proc{t: t, cfg: childConfig{
		StoreDir: filepath.Join(dir, "store"), Port: freePort(t), Definitions: defs,
		AckWait: ackWait, WorkerAckWait: workerAckWait, RepairInterval: repairInterval, StaleBulk: staleBulk,
	}}
	if os.Getenv("JETFLOW_CRASH_LOG") != "" {
		p.cfg.LogFile = filepath.Join(dir, "process.log")
		t.Logf("process log: %s", p.cfg.LogFile)
	}
	p.start()
	t.Cleanup(func() {
		if p.cmd != nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
	})
	return p
}

func (p *proc) start() {
	t := p.t
	raw, err := json.Marshal(p.cfg)
	require.NoError(t, err)
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(raw))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ok := false
		for sc.Scan() {
			if !ok && sc.Text() == "ready" {
				ok = true
				ready <- true
			}
		}
		if !ok {
			ready <- false
		}
	}()
	select {
	case ok := <-ready:
		require.True(t, ok, "the process under test exited before it was ready")
	case <-time.After(2 * time.Minute):
		t.Fatal("the process under test did not become ready")
	}
	p.cmd = cmd
	p.starts++
}

// kill SIGKILLs the process and starts it again at once.
func (p *proc) kill() time.Time {
	require.NoError(p.t, p.cmd.Process.Signal(syscall.SIGKILL))
	_ = p.cmd.Wait()
	p.cmd = nil
	p.start()
	return time.Now()
}

// client connects to the process under test over TCP; it reconnects
// after a kill.
func (p *proc) client() *jetstream.Client {
	t := p.t
	c, err := jetstream.Connect(context.Background(), jetstream.Config{URL: fmt.Sprintf("nats://127.0.0.1:%d", p.cfg.Port), Name: "crashtest"})
	require.NoError(t, err)
	require.NoError(t, c.Bind(context.Background()))
	t.Cleanup(c.Close)
	return c
}

// observe polls fn every interval, tolerating the errors
// of a server that is being killed, until fn reports done or the timeout
// passes.
func observe(t *testing.T, timeout, every time.Duration, what string, fn func(ctx context.Context) (done bool, state string, err error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	var state string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		done, s, err := fn(ctx)
		cancel()
		if err == nil && done {
			return
		}
		if err != nil {
			last = err
		} else {
			state = s
		}
		time.Sleep(every)
	}
	t.Fatalf("%s: not reached within %s; last seen: %s (last error: %v)", what, timeout, state, last)
}

// describe summarises a parent's bulk step.
func describe(inst *workflow.Instance) string {
	st := inst.Steps["fan"]
	if st == nil {
		return string(inst.Status) + ", no bulk step yet"
	}
	return fmt.Sprintf("parent %s, step %s: total %d, cursor %d, done %d, failed %d, recounts %d",
		inst.Status, st.Status, st.Total, st.Cursor, st.Done, st.ChildFailed, st.Recounts)
}

// seed returns the run's random seed (JETFLOW_CRASH_SEED replays one).
func seed(t *testing.T) uint64 {
	s := uint64(time.Now().UnixNano())
	if v := os.Getenv("JETFLOW_CRASH_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		require.NoError(t, err)
		s = n
	}
	t.Logf("seed %d (JETFLOW_CRASH_SEED=%d replays the kill points)", s, s)
	return s
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	require.NoError(t, err, name)
	return n
}

// killPoint is when to kill: once the bulk step's dispatch cursor
// (dispatch) or its terminal children (completion) reach at least n.
type killPoint struct {
	dispatch bool
	n        int
}

func (k killPoint) String() string {
	if k.dispatch {
		return fmt.Sprintf("dispatched >= %d", k.n)
	}
	return fmt.Sprintf("terminal >= %d", k.n)
}

func (k killPoint) reached(st *workflow.StepState) bool {
	if k.dispatch {
		return st.Cursor >= k.n
	}
	return st.Done+st.ChildFailed >= k.n
}

// parentDef is a parent with one bulk step over input.items.
func parentDef(window int, policy string) string {
	return fmt.Sprintf(`
name: parent
version: 1
steps:
  - name: fan
    kind: bulk
    workflow: child
    items: input.items
    max_in_flight: %d
    on_child_failure: %s
`, window, policy)
}

const childDef = `
name: child
version: 1
steps:
  - {name: work, kind: task, task: work}
`

type fanScenario struct {
	name   string
	window int
	policy string
	// failEvery: every failEvery-th item fails (0: none).
	failEvery int
}

func items(n, failEvery int) []byte {
	var b strings.Builder
	b.WriteString(`{"items":[`)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fail := failEvery > 0 && i%failEvery == failEvery-1
		fmt.Fprintf(&b, `{"i":%d,"fail":%t}`, i, fail)
	}
	b.WriteString("]}")
	return []byte(b.String())
}

func TestFanOutSurvivesKillsOfTheEmbeddingProcess(t *testing.T) {
	scenarios := []fanScenario{{name: "unbounded", policy: "wait_all"}}
	if os.Getenv("JETFLOW_CRASH_ALL") != "" {
		scenarios = append(scenarios,
			fanScenario{name: "window100", window: 100, policy: "wait_all"},
			fanScenario{name: "window5000", window: 5000, policy: "wait_all"},
			fanScenario{name: "failures", policy: "wait_all", failEvery: 97},
			fanScenario{name: "failfast", policy: "fail_fast", failEvery: 997},
		)
	}
	n := envInt(t, "JETFLOW_CRASH_N", 3000)
	runs := envInt(t, "JETFLOW_CRASH_RUNS", 1)
	for _, sc := range scenarios {
		for run := 1; run <= runs; run++ {
			t.Run(fmt.Sprintf("%s/n=%d/run%d", sc.name, n, run), func(t *testing.T) {
				fanOutUnderKills(t, sc, n)
			})
		}
	}
}

func fanOutUnderKills(t *testing.T, sc fanScenario, n int) {
	rng := rand.New(rand.NewPCG(seed(t), 0))
	kills := []killPoint{
		{dispatch: true, n: n/10 + rng.IntN(n*8/10)},
		{n: n/5 + rng.IntN(n*3/10)},
		{n: n*6/10 + rng.IntN(n*3/10)},
	}
	if sc.policy == "fail_fast" {
		// The step ends at the first failure: kill before it.
		kills = []killPoint{{dispatch: true, n: n/10 + rng.IntN(n*5/10)}, {n: n/20 + rng.IntN(n/10)}}
	}
	t.Logf("kills at %v", kills)
	p := startProc(t, childDef, parentDef(sc.window, sc.policy))
	c := p.client()
	ctx := context.Background()
	require.NoError(t, c.PublishStart(ctx, jetstream.Start{Workflow: "parent", EventKey: "p", Payload: items(n, sc.failEvery)}))
	id := workflow.InstanceID("parent", "p")

	var lastKill time.Time
	for i, k := range kills {
		ended := false
		observe(t, 10*time.Minute, 20*time.Millisecond, fmt.Sprintf("kill %d (%s)", i+1, k), func(ctx context.Context) (bool, string, error) {
			inst, _, err := c.GetInstance(ctx, id)
			if err != nil {
				return false, "", nil // not created yet
			}
			st := inst.Steps["fan"]
			if inst.Status.Terminal() {
				ended = true
				return true, "", nil
			}
			return st != nil && k.reached(st), describe(inst), nil
		})
		if ended {
			t.Logf("the parent ended before kill %d", i+1)
			break
		}
		lastKill = p.kill()
		c.Close()
		c = p.client()
		t.Logf("kill %d (%s) done; process restarted", i+1, k)
	}

	var inst *workflow.Instance
	observe(t, parentTimeout, 100*time.Millisecond, "parent terminal", func(ctx context.Context) (bool, string, error) {
		var err error
		if inst, _, err = c.GetInstance(ctx, id); err != nil {
			return false, "", err
		}
		return inst.Status.Terminal(), describe(inst), nil
	})
	checkFanOut(t, c, sc, n, inst, lastKill)
}

// checkFanOut asserts from the stored state: children are exactly the
// dispatched indexes, each once and terminal; the step's counts equal the
// barriers and the children's states; the parent's status follows from
// them; and the step ended within the bound after its last child.
func checkFanOut(t *testing.T, c *jetstream.Client, sc fanScenario, n int, inst *workflow.Instance, lastKill time.Time) {
	ctx := context.Background()
	st := inst.Steps["fan"]
	require.NotNil(t, st)
	t.Logf("parent %s: step %s, total %d, cursor %d, done %d, failed %d, recounts %d; error %q",
		inst.Status, st.Status, st.Total, st.Cursor, st.Done, st.ChildFailed, st.Recounts, inst.Error)
	require.Equal(t, n, st.Total)

	ids, err := c.ListInstanceIDs(ctx)
	require.NoError(t, err)
	byID := map[string]int{}
	for i := 0; i < st.Cursor; i++ {
		byID[workflow.ChildInstanceID("child", inst.ID, "fan", i)] = i
	}
	var completed, failed, running []int
	var lastChild time.Time
	seen := 0
	for _, cid := range ids {
		if cid == inst.ID {
			continue
		}
		i, ok := byID[cid]
		require.True(t, ok, "instance %s is not a dispatched child", cid)
		seen++
		child, _, err := c.GetInstance(ctx, cid)
		require.NoError(t, err)
		switch child.Status {
		case workflow.StatusCompleted:
			completed = append(completed, i)
		case workflow.StatusFailed:
			failed = append(failed, i)
		default:
			running = append(running, i)
		}
		if child.Ended.After(lastChild) {
			lastChild = child.Ended
		}
	}
	ok, fail, err := c.BarrierIndexes(ctx, inst.ID, "fan")
	require.NoError(t, err)
	if sc.policy == "fail_fast" {
		// Children dispatched by the pass that failed the step are counted
		// in the cursor but never published; those that were published
		// may still be running.
		require.Equal(t, workflow.StatusFailed, inst.Status)
		require.GreaterOrEqual(t, st.ChildFailed, 1)
		require.LessOrEqual(t, seen, st.Cursor)
		return
	}
	require.Empty(t, running, "children not terminal")
	require.Equal(t, n, st.Cursor, "every item dispatched")
	require.Equal(t, n, seen, "children: exactly one per item")
	wantFailed := 0
	if sc.failEvery > 0 {
		wantFailed = n / sc.failEvery
	}
	require.Len(t, failed, wantFailed, "failed children")
	require.Len(t, completed, n-wantFailed, "completed children")
	require.Len(t, ok, len(completed), "completion barriers")
	require.Len(t, fail, len(failed), "failure barriers")
	sort.Ints(completed)
	for _, i := range completed {
		require.True(t, ok[i], "completed child %d has no barrier", i)
	}
	require.Equal(t, len(completed), st.Done, "counted completions")
	require.Equal(t, len(failed), st.ChildFailed, "counted failures")
	require.Equal(t, workflow.StepCompleted, st.Status)
	require.Equal(t, workflow.StatusCompleted, inst.Status, inst.Error)
	after := st.Ended.Sub(lastChild)
	since := st.Ended.Sub(lastKill)
	t.Logf("the step ended %s after its last child (%s after the last restart)", after, since.Round(time.Millisecond))
	require.LessOrEqual(t, after, fanOutBound, "the step must end within the bound after its last child")
}

// parentTimeout is how long the test waits for the work to finish after
// the last kill: far beyond the bounds it then checks, so a failure
// shows the stuck state instead of a late finish.
const parentTimeout = 5 * time.Minute

// fanOutBound is the documented bound (README, guarantees) with the
// test's timings: a child's completion whose notice was lost after the
// crash is found by the stale-bulk reconciliation, StaleBulk after the
// step last moved, plus one repair sweep; the ack wait of the events and
// tasks the killed process held; and a margin for a loaded machine.
var fanOutBound = staleBulk + repairInterval + ackWait + workerAckWait + 30*time.Second

// taskMillis is how long each task of the sequential workflows takes, so
// that many are in flight when the process is killed.
const taskMillis = 30

const seqDef = `
name: seq
version: 1
steps:
  - {name: a, kind: task, task: work, next: b}
  - {name: b, kind: task, task: work, next: c}
  - {name: c, kind: task, task: work}
`

func TestSequentialWorkflowsSurviveKillsOfTheEmbeddingProcess(t *testing.T) {
	n := envInt(t, "JETFLOW_CRASH_SEQ_N", 2000)
	rng := rand.New(rand.NewPCG(seed(t), 1))
	kills := []int{n/10 + rng.IntN(n*3/10), n/2 + rng.IntN(n*4/10)}
	t.Logf("kills once %v workflows completed", kills)
	p := startProc(t, seqDef)
	c := p.client()
	ctx := context.Background()
	ids := make([]string, n)
	for i := range n {
		key := fmt.Sprintf("k%d", i)
		ids[i] = workflow.InstanceID("seq", key)
		require.NoError(t, c.PublishStart(ctx, jetstream.Start{Workflow: "seq", EventKey: key, Payload: fmt.Appendf(nil, `{"i":%d,"ms":%d}`, i, taskMillis)}))
	}
	completedCount := func(ctx context.Context) (int, error) {
		done := 0
		for _, id := range ids {
			inst, _, err := c.GetInstance(ctx, id)
			if errors.Is(err, workflow.ErrNotFound) {
				continue
			}
			if err != nil {
				return 0, err
			}
			if inst.Status == workflow.StatusCompleted {
				done++
			}
		}
		return done, nil
	}
	// Kill points are found from the dispatcher's completion
	// announcements (cheap, at once), the end from the stored states.
	var mu sync.Mutex
	announced := map[string]bool{}
	var lastKill time.Time
	for i, k := range kills {
		sub, err := c.SubscribeDone("seq", func(id string, _ workflow.Status) {
			mu.Lock()
			announced[id] = true
			mu.Unlock()
		})
		require.NoError(t, err)
		// Announcements made while the test was not subscribed (around a
		// restart) are lost: every few seconds the store is counted too.
		var counted time.Time
		observe(t, 10*time.Minute, 5*time.Millisecond, fmt.Sprintf("kill %d", i+1), func(ctx context.Context) (bool, string, error) {
			mu.Lock()
			seen := len(announced)
			mu.Unlock()
			if seen >= k {
				return true, "", nil
			}
			if time.Since(counted) < 3*time.Second {
				return false, fmt.Sprintf("%d of %d announced", seen, n), nil
			}
			counted = time.Now()
			done, err := completedCount(ctx)
			return done >= k, fmt.Sprintf("%d of %d announced, %d completed in the store", seen, n, done), err
		})
		sub.Stop()
		lastKill = p.kill()
		c.Close()
		c = p.client()
		t.Logf("kill %d (completed >= %d) done; process restarted", i+1, k)
	}
	observe(t, parentTimeout, 500*time.Millisecond, "every workflow completed", func(ctx context.Context) (bool, string, error) {
		done, err := completedCount(ctx)
		return done == n, fmt.Sprintf("%d of %d completed", done, n), err
	})
	var latest time.Time
	for _, id := range ids {
		inst, _, err := c.GetInstance(ctx, id)
		require.NoError(t, err)
		require.Equal(t, workflow.StatusCompleted, inst.Status, "%s: %s", id, inst.Error)
		for _, step := range []string{"a", "b", "c"} {
			require.Equal(t, workflow.StepCompleted, inst.Steps[step].Status)
		}
		if inst.Ended.After(latest) {
			latest = inst.Ended
		}
	}
	took := latest.Sub(lastKill)
	t.Logf("the last workflow completed %s after the last restart", took.Round(time.Millisecond))
	require.LessOrEqual(t, took, seqBound, "every instance must resume within the bound after the last restart")
}

// seqBound is invariant 7's bound with the test's timings: the ack wait
// of what the killed process held, a repair sweep and a margin for a
// loaded machine; far below StaleTask (an hour).
var seqBound = ackWait + workerAckWait + repairInterval + 60*time.Second
