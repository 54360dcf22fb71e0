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
	"github.com/jetflow/jetflow/jetstream"
)

func benchCmd(g *globals) *cobra.Command {
	var (
		o          bench.Options
		external   bool
		syncAlways bool
		workers    int
		workerConc int
		cpuProfile string
		keep       bool
		logLevel   string
		separate   bool
		metrics    bool
	)
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
			ctx := cmd.Context()
			o.Workload = args[0]
			conn, err := g.conn.Resolve(jetstream.InboxPrefixAdmin)
			if err != nil {
				return err
			}
			url := conn.URL
			var procs map[string]*exec.Cmd
			if !external {
				var cleanup func()
				var err error
				var scrape []string
				url, procs, scrape, cleanup, err = startSystem(ctx, separate, syncAlways, workers, workerConc, cpuProfile, keep, logLevel, metrics)
				if err != nil {
					return err
				}
				defer cleanup()
				stopScraping := scrapeEvery(ctx, time.Second, scrape)
				defer stopScraping()
			}
			cfg := jetstream.Config{URL: url, Name: "jetflow-bench"}
			if external {
				cfg.Auth, cfg.InboxPrefix = conn.Auth, conn.InboxPrefix
				cfg.ConnectTimeout = g.connectTimeout // as every other command
			}
			client, err := jetstream.Connect(ctx, cfg)
			if err != nil {
				return err
			}
			defer client.Close()
			if err := waitBound(ctx, client); err != nil {
				return err
			}
			// The clock starts once the dispatcher and every worker it
			// started are pulling: a worker that came up before the
			// dispatcher had provisioned waits before it binds again, and
			// the first workflows used to wait with it (about 2 s at
			// the p99 of some runs).
			pullers := max(workers, 1)
			if external {
				pullers = 1
			}
			if err := waitPulling(ctx, client, pullers); err != nil {
				return err
			}
			o.Client = client
			last := time.Now()
			o.Progress = func(done, total int) {
				if time.Since(last) < time.Second {
					return
				}
				last = time.Now()
				fmt.Fprintf(cmd.ErrOrStderr(), "\r%s: %d/%d finished (%.0f%%)   ", o.Workload, done, total, 100*float64(done)/float64(max(total, 1)))
			}
			res, runErr := bench.Run(ctx, o)
			fmt.Fprintln(cmd.ErrOrStderr())
			if res != nil {
				res.Params["external"] = external
				if !external {
					// With --external the fleet's own settings apply, which
					// the bench does not know.
					res.Params["sync_always"] = syncAlways
					res.Params["separate_server"] = separate
					res.Params["workers"] = workers
					res.Params["worker_concurrency"] = workerConc
					res.Params["metrics"] = metrics
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
				enc := json.NewEncoder(cmd.OutOrStdout())
				if err := enc.Encode(res); err != nil {
					return err
				}
			}
			return runErr
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.N, "n", 10000, "workflows (throughput, latency) or children (fanout)")
	f.IntVar(&o.Concurrency, "concurrency", 0, "workflows in flight (throughput; default 500)")
	f.Float64Var(&o.Rate, "rate", 0, "start workflows at this rate per second instead (latency default 50)")
	f.IntVar(&o.Duplicates, "duplicates", 0, "publish this many copies of each start, each with its own message id (throughput, latency): the cost of duplicate floods")
	f.DurationVar(&o.Timeout, "timeout", 10*time.Minute, "give up after this long")
	f.BoolVar(&external, "external", false, "use the dispatchers and workers already running behind --nats-url")
	f.BoolVar(&syncAlways, "sync-always", false, "embedded server fsyncs every write")
	f.IntVar(&workers, "workers", 1, "worker processes to start")
	f.IntVar(&workerConc, "worker-concurrency", 64, "handlers per worker process")
	f.StringVar(&cpuProfile, "cpu-profile", "", "write the dispatcher's CPU profile to this file")
	f.BoolVar(&keep, "keep", false, "keep the temporary directory (store and system.log, the dispatcher's and workers' logs)")
	f.StringVar(&logLevel, "system-log-level", "warn", "log level of the dispatcher and workers the bench starts (their log is system.log in the temporary directory; see --keep)")
	f.BoolVar(&metrics, "metrics", false, "start the dispatcher and workers with --metrics-listen and scrape their /metrics every second during the run (the cost of metrics)")
	f.BoolVar(&separate, "separate-server", false, "run the NATS server as its own process (TCP) instead of embedded in the dispatcher")
	return cmd
}

// startSystem starts a dispatcher (with its embedded server) and workers as
// separate processes of this binary.
func startSystem(ctx context.Context, separate, syncAlways bool, workers, workerConc int, cpuProfile string, keep bool, logLevel string, metrics bool) (string, map[string]*exec.Cmd, []string, func(), error) {
	// With metrics, every process serves /metrics on a free port of its
	// own; scrape lists them.
	var scrape []string
	metricsArgs := func() []string {
		if !metrics {
			return nil
		}
		p, err := freePort()
		if err != nil {
			return nil
		}
		addr := "127.0.0.1:" + strconv.Itoa(p)
		scrape = append(scrape, "http://"+addr+"/metrics")
		return []string{"--metrics-listen", addr}
	}
	exe, err := os.Executable()
	if err != nil {
		return "", nil, nil, nil, err
	}
	dir, err := os.MkdirTemp("", "jetflow-bench-")
	if err != nil {
		return "", nil, nil, nil, err
	}
	port, err := freePort()
	if err != nil {
		return "", nil, nil, nil, err
	}
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	procs := map[string]*exec.Cmd{}
	var order []*exec.Cmd
	cleanup := func() {
		for i := len(order) - 1; i >= 0; i-- { // workers first, dispatcher last
			p := order[i]
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
		if keep {
			fmt.Fprintf(os.Stderr, "kept %s (store, system.log)\n", dir)
		} else {
			_ = os.RemoveAll(dir)
		}
	}
	logFile, err := os.Create(filepath.Join(dir, "system.log"))
	if err != nil {
		return "", nil, nil, nil, err
	}
	start := func(name string, args ...string) error {
		p := exec.Command(exe, args...)
		p.Stdout, p.Stderr = logFile, logFile
		if err := p.Start(); err != nil {
			return err
		}
		procs[name] = p
		order = append(order, p)
		return nil
	}
	store := filepath.Join(dir, "store")
	listen := "127.0.0.1:" + strconv.Itoa(port)
	dargs := []string{"dispatcher", "--store-dir", store, "--listen", listen, "--log-level", logLevel}
	if separate {
		sargs := []string{"server", "--store-dir", store, "--listen", listen}
		if syncAlways {
			sargs = append(sargs, "--sync-always")
		}
		if err := start("server", sargs...); err != nil {
			cleanup()
			return "", nil, nil, nil, err
		}
		dargs = []string{"dispatcher", "--nats-url", url, "--log-level", logLevel}
	} else if syncAlways {
		dargs = append(dargs, "--sync-always")
	}
	if cpuProfile != "" {
		abs, _ := filepath.Abs(cpuProfile)
		dargs = append(dargs, "--cpu-profile", abs)
	}
	dargs = append(dargs, metricsArgs()...)
	if err := start("dispatcher", dargs...); err != nil {
		cleanup()
		return "", nil, nil, nil, err
	}
	for i := 0; i < workers; i++ {
		name := "worker"
		if workers > 1 {
			name = "worker" + strconv.Itoa(i+1)
		}
		wargs := append([]string{"worker", "--nats-url", url, "--concurrency", strconv.Itoa(workerConc), "--log-level", logLevel}, metricsArgs()...)
		if err := start(name, wargs...); err != nil {
			cleanup()
			return "", nil, nil, nil, err
		}
	}
	return url, procs, scrape, cleanup, nil
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
