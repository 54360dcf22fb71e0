package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetflow/jetflow/internal/promx"
	"github.com/jetflow/jetflow/jetstream"
)

// Task outcomes: the outcome label of jetflow_tasks_total.
const (
	OutcomeOK         = "ok"          // the handler returned no error
	OutcomeError      = "error"       // a plain error: retried under the step's policy
	OutcomePermanent  = "permanent"   // Permanent: no further attempt
	OutcomeRetryAfter = "retry_after" // RetryAfter: the next attempt after the delay asked for
	OutcomePanic      = "panic"       // the handler panicked
	OutcomeTimeout    = "timeout"     // the attempt exceeded the step's timeout
)

// panicError is a handler's panic, recovered.
type panicError struct{ value any }

func (e *panicError) Error() string { return "handler panicked: " + errString(e.value) }

func errString(v any) string {
	if err, ok := v.(error); ok {
		return err.Error()
	}
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

// timeoutError is an attempt that exceeded the step's timeout. Its text
// is the handler's error's, or says so when the handler returned none.
type timeoutError struct {
	err error
}

func (e *timeoutError) Error() string { return e.err.Error() }
func (e *timeoutError) Unwrap() error { return e.err }

// outcomeOf classifies a handler's error, in this order: panic, timeout,
// permanent, retry-after, error.
func outcomeOf(err error) string {
	var pe *panicError
	var te *timeoutError
	switch {
	case err == nil:
		return OutcomeOK
	case errors.As(err, &pe):
		return OutcomePanic
	case errors.As(err, &te):
		return OutcomeTimeout
	case IsPermanent(err):
		return OutcomePermanent
	case retryDelay(err) > 0:
		return OutcomeRetryAfter
	}
	return OutcomeError
}

// metrics are the worker's Prometheus families; they always count.
type metrics struct {
	all             promx.Collectors
	tasks           *prometheus.CounterVec   // task_type, outcome
	execution       *prometheus.HistogramVec // task_type
	scheduleToStart *prometheus.HistogramVec // task_type
	redeliveries    *prometheus.CounterVec   // task_type
	deadLetters     *prometheus.CounterVec   // reason
	pullFailures    *prometheus.CounterVec   // task_type
	// done counts reported attempts, for the presence record.
	done atomic.Uint64
}

// taskBuckets span a handler's run: a millisecond to ten minutes.
var taskBuckets = []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600}

func newMetrics(sem chan struct{}) *metrics {
	m := &metrics{
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetflow_tasks_total", Help: "Task attempts this worker reported, by outcome: ok, error, permanent, retry_after, panic, timeout.",
		}, []string{"task_type", "outcome"}),
		execution: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "jetflow_task_execution_seconds", Help: "Time a handler ran, per attempt.", Buckets: taskBuckets,
		}, []string{"task_type"}),
		scheduleToStart: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "jetflow_task_schedule_to_start_seconds", Help: "Time from a task's publication (its store time in the task stream) to its handler's start: queueing and redelivery delays.", Buckets: taskBuckets,
		}, []string{"task_type"}),
		redeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetflow_task_redeliveries_total", Help: "Task messages this worker received that had been delivered before (a worker died or gave the task back).",
		}, []string{"task_type"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetflow_worker_dead_letters_total", Help: "Task messages this worker dead-lettered, by reason class: malformed, misrouted, effect_refused.",
		}, []string{"reason"}),
		pullFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetflow_worker_pull_failures_total", Help: "Pull requests for tasks that failed (not those that expired or were presumed lost); each is retried with backoff after the consumer is bound again.",
		}, []string{"task_type"}),
	}
	m.all = promx.Collectors{m.tasks, m.execution, m.scheduleToStart, m.redeliveries, m.deadLetters, m.pullFailures,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "jetflow_worker_slots", Help: "Handler slots (Config.Concurrency) by state: busy or free.", ConstLabels: prometheus.Labels{"state": "busy"},
		}, func() float64 { return float64(len(sem)) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "jetflow_worker_slots", Help: "Handler slots (Config.Concurrency) by state: busy or free.", ConstLabels: prometheus.Labels{"state": "free"},
		}, func() float64 { return float64(cap(sem) - len(sem)) }),
	}
	return m
}

// reported counts one reported attempt.
func (m *metrics) reported(taskType string, herr error) {
	m.tasks.WithLabelValues(taskType, outcomeOf(herr)).Inc()
	m.done.Add(1)
}

// received counts a task message as it starts.
func (m *metrics) received(taskType string, deliveries uint64, stored time.Time) {
	if deliveries > 1 {
		m.redeliveries.WithLabelValues(taskType).Inc()
	}
	if !stored.IsZero() {
		m.scheduleToStart.WithLabelValues(taskType).Observe(max(time.Since(stored), 0).Seconds())
	}
}

// Collector exposes the worker's metrics (see docs/observability.md) for
// a Prometheus registry: reg.MustRegister(w.Collector()).
func (w *Worker) Collector() prometheus.Collector { return w.metrics.all }

// announce writes the worker's presence record until the returned func
// is called (which withdraws it and waits).
func (w *Worker) announce() (stop func()) {
	if w.cfg.PresenceInterval < 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	started := time.Now()
	p := jetstream.Presence{
		Kind: jetstream.PresenceWorker, Name: w.cfg.Name, Host: jetstream.ProcessHost(), PID: os.Getpid(),
		Version: jetstream.BuildVersion(), Started: started, TaskTypes: w.TaskTypes(), Concurrency: w.cfg.Concurrency,
	}
	go func() {
		defer close(done)
		w.client.AnnounceEvery(ctx, w.cfg.PresenceInterval, func() jetstream.Presence {
			p.Busy, p.TasksDone = len(w.sem), w.metrics.done.Load()
			return p
		})
	}()
	return func() {
		cancel()
		<-done
	}
}
