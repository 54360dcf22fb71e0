// Package bench drives real workloads through jetflow and verifies every
// instance afterwards. It backs `jetflow bench`; see BENCHMARKS.md.
//
// Workloads:
//   - throughput: N workflows of 3 sequential trivial tasks, C in flight
//     (or a fixed rate);
//   - latency: the same workflow at a fixed low rate;
//   - fanout: one parent with a bulk step over N items (see bulk.go).
//
// Each run yields one Result. A run with lost or duplicated work is an
// error.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// Options configure one run.
type Options struct {
	// Workload: "throughput", "latency" or "fanout".
	Workload string
	// N is the number of workflows (throughput, latency) or children
	// (fanout).
	N int
	// Concurrency is the most workflows in flight (throughput). Default 500.
	Concurrency int
	// Rate, when positive, starts workflows at this many per second instead
	// of keeping Concurrency in flight. Latency default 50.
	Rate float64
	// Timeout bounds the whole run. Default 10m.
	Timeout time.Duration
	// Client is connected to the jetflow under test.
	Client *jetstream.Client
	// RunID makes event keys unique per run. Default: the start time.
	RunID string
	// Duplicates is how many copies of each start are published after it
	// (throughput, latency), each with a message id of its own, so each
	// reaches a dispatcher and is stopped by the instance key: the cost
	// of duplicate floods. Default 0.
	Duplicates int
	// Progress, when set, receives human-readable progress lines.
	Progress func(done, total int)
	Logger   zerolog.Logger
}

// Latency summarises end-to-end workflow times in milliseconds.
type Latency struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// Process is the resource use of one process of the system under test.
type Process struct {
	CPUSeconds float64 `json:"cpu_s"`
	PeakRSSMB  float64 `json:"peak_rss_mb"`
}

// Result is what one run measured.
type Result struct {
	Workload      string             `json:"workload"`
	Params        map[string]any     `json:"params"`
	WallSeconds   float64            `json:"wall_s"`
	WorkflowsPerS float64            `json:"workflows_per_s"`
	TasksPerS     float64            `json:"tasks_per_s"`
	ChildrenPerS  float64            `json:"children_per_s,omitempty"`
	LatencyMS     Latency            `json:"latency_ms"`
	Processes     map[string]Process `json:"processes,omitempty"`
	Started       int                `json:"started"`
	Completed     int                `json:"completed"`
	Failed        int                `json:"failed"`
	Duplicates    int                `json:"duplicates"`
	Lost          int                `json:"lost"`
	// Dispatchers: each dispatcher's counters after the run (what
	// `jetflow stats` shows: retries, conflicts, recounts, pull stalls...).
	Dispatchers []json.RawMessage `json:"dispatcher_stats,omitempty"`
}

// ErrIncorrect: the run lost or duplicated work.
var ErrIncorrect = errors.New("benchmark run lost or duplicated work")

// SeqDefinition is the throughput and latency workflow: three sequential
// trivial tasks.
const SeqDefinition = `
name: bench-seq3
version: 1
steps:
  - {name: a, kind: task, task: noop, next: b}
  - {name: b, kind: task, task: noop, next: c}
  - {name: c, kind: task, task: noop}
`

// Run executes one workload.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.RunID == "" {
		o.RunID = strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	if o.N < 0 {
		return nil, fmt.Errorf("n must not be negative, got %d", o.N)
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	res, err := run(ctx, o)
	if res != nil {
		// Counters explain a slow run (a retried pull, a stream outage).
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		// Optional: a run's figures stand without the counters.
		res.Dispatchers, _ = o.Client.CollectStats(sctx, 300*time.Millisecond)
		scancel()
	}
	return res, err
}

func run(ctx context.Context, o Options) (*Result, error) {
	switch o.Workload {
	case "throughput":
		if o.Concurrency == 0 {
			o.Concurrency = 500
		}
		return runSeq(ctx, o)
	case "latency":
		if o.Rate == 0 {
			o.Rate = 50
		}
		o.Concurrency = 0
		return runSeq(ctx, o)
	case "fanout":
		return runFanout(ctx, o)
	}
	return nil, fmt.Errorf("unknown workload %q (throughput, latency or fanout)", o.Workload)
}

func register(ctx context.Context, c *jetstream.Client, src string) (*workflow.Definition, error) {
	def, err := workflow.Parse("bench", []byte(src))
	if err != nil {
		return nil, err
	}
	return def, c.PutDefinition(ctx, def, []byte(src))
}

// tracker follows instances through the KV watch.
type tracker struct {
	mu       sync.Mutex
	started  map[string]time.Time // id -> publish time
	ended    map[string]time.Time
	status   map[string]workflow.Status
	terminal map[string]int // terminal updates seen per id (more than 1 = a state moved after terminal)
	foreign  map[string]bool
	doneCh   chan string
}

func newTracker() *tracker {
	return &tracker{started: map[string]time.Time{}, ended: map[string]time.Time{}, status: map[string]workflow.Status{},
		terminal: map[string]int{}, foreign: map[string]bool{}, doneCh: make(chan string, 1<<16)}
}

// watch follows completion announcements of one workflow. Announcements
// are hints (core NATS); verify reads the store afterwards.
func (t *tracker) watch(c *jetstream.Client, wf string) (stop func(), err error) {
	sub, err := c.SubscribeDone(wf, func(id string, status workflow.Status) {
		now := time.Now()
		t.mu.Lock()
		defer t.mu.Unlock()
		t.terminal[id]++
		if t.terminal[id] > 1 {
			return
		}
		t.status[id] = status
		t.ended[id] = now
		select {
		case t.doneCh <- id:
		default:
		}
	})
	if err != nil {
		return nil, err
	}
	return sub.Stop, nil
}

func (t *tracker) markStarted(id string, at time.Time) {
	t.mu.Lock()
	t.started[id] = at
	t.mu.Unlock()
}

func (t *tracker) finished() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.ended)
}

// runSeq runs the throughput and latency workloads: o.N instances of
// the three-task workflow, Concurrency in flight or started at Rate, then
// checks every instance in the store.
func runSeq(ctx context.Context, o Options) (*Result, error) {
	c := o.Client
	if _, err := register(ctx, c, SeqDefinition); err != nil {
		return nil, err
	}
	tr := newTracker()
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	stopSub, err := tr.watch(c, "bench-seq3")
	if err != nil {
		return nil, err
	}
	start := time.Now()
	var inflight chan struct{}
	if o.Concurrency > 0 {
		inflight = make(chan struct{}, o.Concurrency)
	}
	relDone := tr.releaseSlots(watchCtx, inflight)
	if err := publishSeq(ctx, o, tr, inflight); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Wait for all to finish (or the timeout).
	pollUntil(ctx, func() bool { return tr.finished() >= o.N }, func() { o.progress(tr.finished()) })
	wall := time.Since(start)
	stopSub()
	stopWatch()
	<-relDone
	res := tr.result(o, wall)
	res.TasksPerS = round(float64(res.Completed+res.Failed)*3/wall.Seconds(), 1)
	if err := verify(context.Background(), c, tr, res); err != nil {
		return res, err
	}
	if res.Lost > 0 || res.Duplicates > 0 {
		return res, fmt.Errorf("%w: lost %d, duplicates %d", ErrIncorrect, res.Lost, res.Duplicates)
	}
	return res, nil
}

// releaseSlots frees an in-flight slot (when inflight is not nil) per
// finished instance until ctx ends; the channel it returns is closed
// then.
func (t *tracker) releaseSlots(ctx context.Context, inflight chan struct{}) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.doneCh:
				if inflight != nil {
					select {
					case <-inflight:
					default:
					}
				}
			}
		}
	}()
	return done
}

// publishSeq publishes the o.N starts of runSeq, at o.Rate and with at
// most inflight unfinished, and returns once all are published or one
// publish failed. Starts are published by a pool: one synchronous
// publish at a time tops out near 800 starts/s here, which would measure
// the bench.
func publishSeq(ctx context.Context, o Options, tr *tracker, inflight chan struct{}) error {
	var tick <-chan time.Time
	if o.Rate > 0 {
		ticker := time.NewTicker(time.Duration(float64(time.Second) / o.Rate))
		defer ticker.Stop()
		tick = ticker.C
	}
	jobs := make(chan int)
	pub, pctx := errgroup.WithContext(ctx)
	for range startPublishers {
		pub.Go(func() error {
			for i := range jobs {
				if err := publishSeqStart(pctx, o, tr, i); err != nil {
					return err
				}
			}
			return nil
		})
	}
	feedSeq(pctx, o, tr, jobs, tick, inflight)
	close(jobs)
	return pub.Wait()
}

// feedSeq hands the indexes 0 .. o.N-1 to the publishers on jobs, each
// after a tick (when tick is not nil) and a free in-flight slot (when
// inflight is not nil), until ctx ends.
func feedSeq(ctx context.Context, o Options, tr *tracker, jobs chan<- int, tick <-chan time.Time, inflight chan struct{}) {
	for i := 0; i < o.N; i++ {
		if tick != nil {
			select {
			case <-tick:
			case <-ctx.Done():
				return
			}
		}
		if inflight != nil {
			select {
			case inflight <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
		select {
		case jobs <- i:
		case <-ctx.Done():
			return
		}
		if i%1000 == 0 {
			o.progress(tr.finished())
		}
	}
}

// publishSeqStart publishes start i of runSeq and its o.Duplicates
// copies, each with a message id of its own.
func publishSeqStart(ctx context.Context, o Options, tr *tracker, i int) error {
	c := o.Client
	key := o.RunID + "-" + strconv.Itoa(i)
	tr.markStarted(workflow.InstanceID("bench-seq3", key), time.Now())
	if err := c.PublishStart(ctx, jetstream.Start{Workflow: "bench-seq3", EventKey: key, Payload: []byte(`{}`)}); err != nil {
		return err
	}
	for k := 1; k <= o.Duplicates; k++ {
		headers := map[string]string{jetstream.HeaderEventKey: key, jetstream.HeaderMsgID: "dup/" + key + "/" + strconv.Itoa(k)}
		if _, err := c.Publish(ctx, jetstream.StartSubject("bench-seq3"), []byte(`{}`), headers); err != nil {
			return err
		}
	}
	return nil
}

// pollUntil looks every 20 ms whether done, until it is or ctx ends, and
// calls progress after each look.
func pollUntil(ctx context.Context, done func() bool, progress func()) {
	for !done() && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
		progress()
	}
}

// progress reports done of o.N to o.Progress, if set.
func (o Options) progress(done int) {
	if o.Progress != nil {
		o.Progress(done, o.N)
	}
}

func (t *tracker) result(o Options, wall time.Duration) *Result {
	t.mu.Lock()
	defer t.mu.Unlock()
	res := &Result{
		Workload:    o.Workload,
		Params:      map[string]any{"n": o.N, "concurrency": o.Concurrency, "rate": o.Rate, "duplicates": o.Duplicates},
		WallSeconds: round(wall.Seconds(), 3),
		Started:     len(t.started),
	}
	var lats []float64
	for id, at := range t.started {
		end, ok := t.ended[id]
		if !ok {
			continue
		}
		lats = append(lats, float64(end.Sub(at).Microseconds())/1000)
		switch t.status[id] {
		case workflow.StatusCompleted:
			res.Completed++
		default:
			res.Failed++
		}
	}
	for id, n := range t.terminal {
		if n > 1 {
			res.Duplicates += n - 1
		}
		if _, ok := t.started[id]; !ok {
			res.Duplicates++
		}
	}
	res.Lost = res.Started - res.Completed - res.Failed
	res.WorkflowsPerS = round(float64(res.Completed+res.Failed)/wall.Seconds(), 1)
	res.LatencyMS = percentiles(lats)
	return res
}

// verify reads the final state of every started instance from the store:
// each must exist and be terminal, or it counts as lost. (Duplicates are
// counted from the completion announcements: an instance announced as
// ended more than once moved after it ended.)
func verify(ctx context.Context, c *jetstream.Client, t *tracker, res *Result) error {
	t.mu.Lock()
	ids := make([]string, 0, len(t.started))
	for id := range t.started {
		ids = append(ids, id)
	}
	t.mu.Unlock()
	lost := 0
	err := readInstances(ctx, c, len(ids), func(i int) string { return ids[i] }, func(_ int, in *workflow.Instance, err error) error {
		switch {
		case errors.Is(err, workflow.ErrNotFound):
			lost++
		case err != nil:
			return err
		case !in.Status.Terminal():
			lost++
		}
		return nil
	})
	if err != nil {
		return err
	}
	if lost > res.Lost {
		res.Lost = lost
	}
	return nil
}

// verifyReaders is how many instance reads verification keeps in flight:
// one at a time, a 100,000-child fan-out's command took 30 s beyond the
// run's wall time (startup and shutdown included), 16 at a time 9 s.
const verifyReaders = 16

// readInstances reads the instances id(0) .. id(n-1), verifyReaders at a
// time, and hands each outcome to each, one call at a time.
func readInstances(ctx context.Context, c *jetstream.Client, n int, id func(i int) string, each func(i int, in *workflow.Instance, err error) error) error {
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(verifyReaders)
	for i := 0; i < n; i++ {
		g.Go(func() error {
			in, _, err := c.GetInstance(gctx, id(i))
			mu.Lock()
			defer mu.Unlock()
			return each(i, in, err)
		})
	}
	return g.Wait()
}

func percentiles(v []float64) Latency {
	if len(v) == 0 {
		return Latency{}
	}
	sort.Float64s(v)
	at := func(p float64) float64 {
		i := int(p * float64(len(v)-1))
		return round(v[i], 2)
	}
	return Latency{P50: at(0.5), P90: at(0.9), P99: at(0.99), Max: round(v[len(v)-1], 2)}
}

func round(f float64, digits int) float64 {
	p := 1.0
	for i := 0; i < digits; i++ {
		p *= 10
	}
	return float64(int64(f*p+0.5)) / p
}

// ProcessStats reads CPU seconds and peak RSS of a process from /proc.
func ProcessStats(pid int) (Process, error) {
	var p Process
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return p, err
	}
	var kb float64
	for _, line := range strings.Split(string(status), "\n") {
		if n, _ := fmt.Sscanf(line, "VmHWM: %f kB", &kb); n == 1 {
			p.PeakRSSMB = round(kb/1024, 1)
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return p, err
	}
	// Fields after the command name (which is in parentheses): utime and
	// stime are the 12th and 13th, in clock ticks (100 Hz on Linux).
	fields := strings.Fields(string(stat)[strings.LastIndexByte(string(stat), ')')+1:])
	if len(fields) > 12 {
		ut, _ := strconv.ParseFloat(fields[11], 64)
		st, _ := strconv.ParseFloat(fields[12], 64)
		p.CPUSeconds = round((ut+st)/100, 2)
	}
	return p, nil
}

// Fanout definitions: one parent, a bulk step over N items, each child
// one trivial task.
const (
	FanoutChildDefinition = `
name: bench-child
version: 1
steps:
  - {name: work, kind: task, task: noop}
`
	FanoutParentDefinition = `
name: bench-fanout
version: 1
steps:
  - name: fan
    kind: bulk
    workflow: bench-child
    items: input.items
    max_items: 1000000
`
)

// startPublishers is how many starts the throughput and latency workloads
// publish at once.
const startPublishers = 16

// runFanout runs the fanout workload: one parent whose bulk step starts
// o.N children, then checks the parent's counts and every child in the
// store.
func runFanout(ctx context.Context, o Options) (*Result, error) {
	c := o.Client
	if _, err := register(ctx, c, FanoutChildDefinition); err != nil {
		return nil, err
	}
	if _, err := register(ctx, c, FanoutParentDefinition); err != nil {
		return nil, err
	}
	key := o.RunID
	parent := workflow.InstanceID("bench-fanout", key)
	children := newTracker()
	stopChildren, err := children.watch(c, "bench-child")
	if err != nil {
		return nil, err
	}
	defer stopChildren()
	parents := newTracker()
	stopParents, err := parents.watch(c, "bench-fanout")
	if err != nil {
		return nil, err
	}
	defer stopParents()
	payload := fanoutPayload(o.N)
	start := time.Now()
	parents.markStarted(parent, start)
	if err := c.PublishStart(ctx, jetstream.Start{Workflow: "bench-fanout", EventKey: key, Payload: payload}); err != nil {
		return nil, err
	}
	pollUntil(ctx, func() bool { return parents.finished() >= 1 }, func() { o.progress(children.finished()) })
	wall := time.Since(start)
	res := &Result{
		Workload:    "fanout",
		Params:      map[string]any{"n": o.N},
		WallSeconds: round(wall.Seconds(), 3),
		Started:     o.N,
	}
	// Verify from the store: the parent's counts, then every child.
	if err := verifyFanout(context.Background(), o, parent, res); err != nil {
		return res, err
	}
	res.Duplicates, res.LatencyMS = children.sinceStart(start)
	res.ChildrenPerS = round(float64(res.Completed+res.Failed)/wall.Seconds(), 1)
	res.WorkflowsPerS = res.ChildrenPerS
	res.TasksPerS = res.ChildrenPerS
	if res.Lost > 0 || res.Duplicates > 0 {
		return res, fmt.Errorf("%w: lost %d, duplicates %d", ErrIncorrect, res.Lost, res.Duplicates)
	}
	return res, nil
}

// fanoutPayload is the fanout parent's input: n items.
func fanoutPayload(n int) []byte {
	var payload strings.Builder
	payload.WriteString(`{"items":[`)
	for i := 0; i < n; i++ {
		if i > 0 {
			payload.WriteByte(',')
		}
		payload.WriteString(strconv.Itoa(i))
	}
	payload.WriteString("]}")
	return []byte(payload.String())
}

// verifyFanout reads the fanout parent from the store, which must have
// completed with every child counted, then every child, counting each
// in res as completed, failed or lost.
func verifyFanout(ctx context.Context, o Options, parent string, res *Result) error {
	c := o.Client
	in, _, err := c.GetInstance(ctx, parent)
	if err != nil {
		return err
	}
	fan := in.Steps["fan"]
	if in.Status != workflow.StatusCompleted || fan == nil || fan.Total != o.N || fan.Done+fan.ChildFailed != o.N {
		res.Lost = o.N
		if fan != nil {
			res.Lost = o.N - fan.Done - fan.ChildFailed
		}
		return fmt.Errorf("%w: parent is %s (%s) with %+v", ErrIncorrect, in.Status, in.Error, fan)
	}
	read := 0
	return readInstances(ctx, c, o.N, func(i int) string { return workflow.ChildInstanceID("bench-child", parent, "fan", i) }, func(_ int, ch *workflow.Instance, err error) error {
		switch {
		case errors.Is(err, workflow.ErrNotFound):
			res.Lost++
		case err != nil:
			return err
		case ch.Status == workflow.StatusCompleted:
			res.Completed++
		case ch.Status.Terminal():
			res.Failed++
		default:
			res.Lost++
		}
		if read++; o.Progress != nil && read%10000 == 0 {
			o.Progress(read, o.N)
		}
		return nil
	})
}

// sinceStart returns how many more times than once instances were
// announced as ended (each is a duplicate) and the times from start to
// each instance's end.
func (t *tracker) sinceStart(start time.Time) (duplicates int, lat Latency) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, n := range t.terminal {
		if n > 1 {
			duplicates += n - 1
		}
	}
	var lats []float64
	for _, end := range t.ended {
		lats = append(lats, float64(end.Sub(start).Microseconds())/1000)
	}
	return duplicates, percentiles(lats)
}
