package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetflow/jetflow/bench"
	"github.com/jetflow/jetflow/internal/run"
	"github.com/jetflow/jetflow/jetstream"
)

// benchFlags are the settings of `jetflow bench`.
type benchFlags struct {
	o        bench.Options
	external bool
	sys      systemOptions
}

func benchCmd(g *globals) *cobra.Command {
	var b benchFlags
	cmd := &cobra.Command{
		Use:   "bench throughput|latency|fanout",
		Short: "Run a benchmark; prints one JSON object on stdout (see BENCHMARKS.md)",
		Long: `Runs a workload and verifies every instance afterwards; exits non-zero
if any work was lost or duplicated. By default it starts its own dispatcher
(with an embedded server in a temporary directory) and worker processes;
with --external it uses the dispatchers and workers already running behind
--nats-url.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b.o.Workload = args[0]
			return b.run(cmd, g)
		},
	}
	f := cmd.Flags()
	f.IntVar(&b.o.N, "n", 10000, "workflows (throughput, latency) or children (fanout)")
	f.IntVar(&b.o.Concurrency, "concurrency", 0, "workflows in flight (throughput; default 500)")
	f.Float64Var(&b.o.Rate, "rate", 0, "start workflows at this rate per second instead (latency default 50)")
	f.IntVar(&b.o.Duplicates, "duplicates", 0, "publish this many copies of each start, each with its own message id (throughput, latency): the cost of duplicate floods")
	f.DurationVar(&b.o.Timeout, "timeout", 10*time.Minute, "give up after this long")
	f.BoolVar(&b.external, "external", false, "use the dispatchers and workers already running behind --nats-url")
	f.BoolVar(&b.sys.SyncAlways, "sync-always", false, "embedded server fsyncs every write")
	f.IntVar(&b.sys.Workers, "workers", 1, "worker processes to start")
	f.IntVar(&b.sys.WorkerConcurrency, "worker-concurrency", 64, "handlers per worker process")
	f.StringVar(&b.sys.CPUProfile, "cpu-profile", "", "write the dispatcher's CPU profile to this file")
	f.BoolVar(&b.sys.Keep, "keep", false, "keep the temporary directory (store and system.log, the dispatcher's and workers' logs)")
	f.StringVar(&b.sys.LogLevel, "system-log-level", "warn", "log level of the dispatcher and workers the bench starts (their log is system.log in the temporary directory; see --keep)")
	f.BoolVar(&b.sys.Metrics, "metrics", false, "start the dispatcher and workers with --metrics-listen and scrape their /metrics every second during the run (the cost of metrics)")
	f.BoolVar(&b.sys.Separate, "separate-server", false, "run the NATS server as its own process (TCP) instead of embedded in the dispatcher")
	return cmd
}

// run starts the system under test (unless --external), runs the
// workload on it and prints the result as JSON; the error says whether
// any work was lost or duplicated.
func (b *benchFlags) run(cmd *cobra.Command, g *globals) error {
	ctx := cmd.Context()
	conn, err := g.conn.Resolve(jetstream.InboxPrefixAdmin)
	if err != nil {
		return err
	}
	url := conn.URL
	var procs map[string]*exec.Cmd
	if !b.external {
		sys, err := startSystem(ctx, b.sys)
		if err != nil {
			return err
		}
		defer sys.stop()
		stopScraping := scrapeEvery(ctx, time.Second, sys.scrape)
		defer stopScraping()
		url, procs = sys.url, sys.procs
	}
	client, err := b.connect(ctx, g, conn, url)
	if err != nil {
		return err
	}
	defer client.Close()
	b.o.Client = client
	b.o.Progress = progressLine(cmd.ErrOrStderr(), b.o.Workload)
	res, runErr := bench.Run(ctx, b.o)
	fmt.Fprintln(cmd.ErrOrStderr())
	if res != nil {
		b.describe(res, procs)
		enc := json.NewEncoder(cmd.OutOrStdout())
		if err := enc.Encode(res); err != nil {
			return err
		}
	}
	return runErr
}

// connect connects to the system under test at url and waits until it
// is provisioned and its dispatcher and workers pull, so that the clock
// does not measure their start.
func (b *benchFlags) connect(ctx context.Context, g *globals, conn run.Conn, url string) (*jetstream.Client, error) {
	cfg := jetstream.Config{URL: url, Name: "jetflow-bench"}
	if b.external {
		cfg.Auth, cfg.InboxPrefix = conn.Auth, conn.InboxPrefix
		cfg.ConnectTimeout = g.connectTimeout // as every other command
	}
	client, err := jetstream.Connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := waitBound(ctx, client); err != nil {
		client.Close()
		return nil, err
	}
	// The clock starts once the dispatcher and every worker it
	// started are pulling: a worker that came up before the
	// dispatcher had provisioned waits before it binds again, and
	// the first workflows used to wait with it (about 2 s at
	// the p99 of some runs).
	pullers := max(b.sys.Workers, 1)
	if b.external {
		pullers = 1
	}
	if err := waitPulling(ctx, client, pullers); err != nil {
		client.Close()
		return nil, err
	}
	return client, nil
}

// progressLine reports a run's progress on w, at most once a second, on
// one line rewritten in place.
func progressLine(w io.Writer, workload string) func(done, total int) {
	last := time.Now()
	return func(done, total int) {
		if time.Since(last) < time.Second {
			return
		}
		last = time.Now()
		fmt.Fprintf(w, "\r%s: %d/%d finished (%.0f%%)   ", workload, done, total, 100*float64(done)/float64(max(total, 1)))
	}
}

// describe adds to res the settings of the system the bench started and
// the resource use of its processes and of the bench itself.
func (b *benchFlags) describe(res *bench.Result, procs map[string]*exec.Cmd) {
	res.Params["external"] = b.external
	if !b.external {
		// With --external the fleet's own settings apply, which
		// the bench does not know.
		res.Params["sync_always"] = b.sys.SyncAlways
		res.Params["separate_server"] = b.sys.Separate
		res.Params["workers"] = b.sys.Workers
		res.Params["worker_concurrency"] = b.sys.WorkerConcurrency
		res.Params["metrics"] = b.sys.Metrics
	}
	if len(procs) > 0 {
		res.Processes = map[string]bench.Process{}
		for name, p := range procs {
			if st, err := bench.ProcessStats(p.Process.Pid); err == nil {
				res.Processes[name] = st
			}
		}
	}
	if self, err := bench.ProcessStats(os.Getpid()); err == nil {
		if res.Processes == nil {
			res.Processes = map[string]bench.Process{}
		}
		res.Processes["bench"] = self
	}
}

// systemOptions say how `jetflow bench` starts the system under test.
type systemOptions struct {
	// Separate runs the NATS server as its own process (TCP) instead of
	// embedded in the dispatcher.
	Separate bool
	// SyncAlways makes the server fsync every write.
	SyncAlways bool
	// Workers is how many worker processes to start;
	// WorkerConcurrency the handlers of each.
	Workers, WorkerConcurrency int
	// CPUProfile, when set, is where the dispatcher writes its CPU
	// profile.
	CPUProfile string
	// Keep keeps the temporary directory (store, system.log).
	Keep bool
	// LogLevel is the log level of the processes started.
	LogLevel string
	// Metrics makes every process serve /metrics, for scraping.
	Metrics bool
}

// system is the processes startSystem started, all of this binary, in a
// temporary directory.
type system struct {
	url    string               // of the NATS server
	procs  map[string]*exec.Cmd // by name: server, dispatcher, worker, worker1...
	scrape []string             // the /metrics URLs, with Metrics
	order  []*exec.Cmd          // in start order
	dir    string               // the temporary directory
	keep   bool                 // keep dir at stop
	exe    string               // this binary
	log    *os.File             // system.log in dir: every process's output
}

// startSystem starts a dispatcher (with its embedded server, or a server
// of its own with o.Separate) and workers as separate processes of this
// binary.
func startSystem(ctx context.Context, o systemOptions) (*system, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "jetflow-bench-")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &system{url: "nats://127.0.0.1:" + strconv.Itoa(port), procs: map[string]*exec.Cmd{}, dir: dir, keep: o.Keep, exe: exe}
	s.log, err = os.Create(filepath.Join(dir, "system.log"))
	if err != nil {
		return nil, err
	}
	store := filepath.Join(dir, "store")
	listen := "127.0.0.1:" + strconv.Itoa(port)
	dargs := []string{"dispatcher", "--store-dir", store, "--listen", listen, "--log-level", o.LogLevel}
	if o.Separate {
		sargs := []string{"server", "--store-dir", store, "--listen", listen}
		if o.SyncAlways {
			sargs = append(sargs, "--sync-always")
		}
		if err := s.start("server", sargs...); err != nil {
			s.stop()
			return nil, err
		}
		dargs = []string{"dispatcher", "--nats-url", s.url, "--log-level", o.LogLevel}
	} else if o.SyncAlways {
		dargs = append(dargs, "--sync-always")
	}
	if o.CPUProfile != "" {
		abs, _ := filepath.Abs(o.CPUProfile)
		dargs = append(dargs, "--cpu-profile", abs)
	}
	dargs = append(dargs, s.metricsArgs(o.Metrics)...)
	if err := s.start("dispatcher", dargs...); err != nil {
		s.stop()
		return nil, err
	}
	for i := 0; i < o.Workers; i++ {
		name := "worker"
		if o.Workers > 1 {
			name = "worker" + strconv.Itoa(i+1)
		}
		wargs := append([]string{"worker", "--nats-url", s.url, "--concurrency", strconv.Itoa(o.WorkerConcurrency), "--log-level", o.LogLevel}, s.metricsArgs(o.Metrics)...)
		if err := s.start(name, wargs...); err != nil {
			s.stop()
			return nil, err
		}
	}
	return s, nil
}

// metricsArgs are the flags that make a process serve /metrics on a free
// port of its own, which is added to s.scrape; none without metrics.
func (s *system) metricsArgs(metrics bool) []string {
	if !metrics {
		return nil
	}
	p, err := freePort()
	if err != nil {
		return nil
	}
	addr := "127.0.0.1:" + strconv.Itoa(p)
	s.scrape = append(s.scrape, "http://"+addr+"/metrics")
	return []string{"--metrics-listen", addr}
}

// start starts this binary with args as process name, its output going
// to system.log.
func (s *system) start(name string, args ...string) error {
	p := exec.Command(s.exe, args...)
	p.Stdout, p.Stderr = s.log, s.log
	if err := p.Start(); err != nil {
		return err
	}
	s.procs[name] = p
	s.order = append(s.order, p)
	return nil
}

// stop stops the processes in the reverse order of their start (workers
// first, the dispatcher last), each with SIGTERM and, after 30 s, a
// kill; then it removes the temporary directory unless Keep.
func (s *system) stop() {
	for i := len(s.order) - 1; i >= 0; i-- { // workers first, dispatcher last
		p := s.order[i]
		_ = p.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = p.Process.Kill()
			<-done
		}
	}
	if s.keep {
		fmt.Fprintf(os.Stderr, "kept %s (store, system.log)\n", s.dir)
	} else {
		_ = os.RemoveAll(s.dir)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitBound(ctx context.Context, c *jetstream.Client) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := c.Bind(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("jetflow not provisioned after 30s: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitPulling waits until the dispatcher consumer of the event stream has
// a pull waiting and the noop task consumer (every bench workload's task
// type) has at least workers of them.
func waitPulling(ctx context.Context, c *jetstream.Client, workers int) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		events, err := c.PullsWaiting(ctx, jetstream.StreamEvents, jetstream.ConsumerDispatcher)
		if err != nil {
			return err
		}
		tasks, err := c.PullsWaiting(ctx, jetstream.StreamTasks, jetstream.WorkerConsumer("noop"))
		if err != nil {
			return err
		}
		if events >= 1 && tasks >= workers {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after 30s, %d dispatcher pulls on %s (want 1) and %d worker pulls of noop tasks (want %d): are a dispatcher and workers with the noop task type running?",
				events, jetstream.StreamEvents, tasks, workers)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// scrapeEvery fetches each URL every interval until stop is called, as a
// Prometheus server would (bench --metrics).
func scrapeEvery(ctx context.Context, interval time.Duration, urls []string) (stop func()) {
	if len(urls) == 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			for _, u := range urls {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
				if err != nil {
					continue
				}
				if resp, err := http.DefaultClient.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
