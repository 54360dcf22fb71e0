package dispatcher

import (
	"context"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetflow/jetflow/jetstream"
)

// backlogCollector exposes the last read of the task queues: the backlog
// an autoscaler (KEDA, an HPA on an external metric) scales workers by.
// Every dispatcher reads the same queues, so every dispatcher reports the
// same values.
type backlogCollector struct {
	mu     sync.Mutex
	queues []jetstream.TaskQueue
}

var (
	backlogDesc = prometheus.NewDesc("jetflow_task_backlog",
		"Tasks of the type not delivered to any worker yet (the consumer's pending count). Refreshed every few seconds.", []string{"task_type"}, nil)
	ackPendingDesc = prometheus.NewDesc("jetflow_task_ack_pending",
		"Tasks of the type a worker holds: delivered, not acknowledged. Refreshed every few seconds.", []string{"task_type"}, nil)
	pullsWaitingDesc = prometheus.NewDesc("jetflow_task_pulls_waiting",
		"Pull requests of workers waiting for tasks of the type right now (0: no worker is pulling it). Refreshed every few seconds.", []string{"task_type"}, nil)
)

// Describe implements prometheus.Collector.
func (b *backlogCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- backlogDesc
	ch <- ackPendingDesc
	ch <- pullsWaitingDesc
}

// Collect implements prometheus.Collector.
func (b *backlogCollector) Collect(ch chan<- prometheus.Metric) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, q := range b.queues {
		ch <- prometheus.MustNewConstMetric(backlogDesc, prometheus.GaugeValue, float64(q.Pending), q.TaskType)
		ch <- prometheus.MustNewConstMetric(ackPendingDesc, prometheus.GaugeValue, float64(q.AckPending), q.TaskType)
		ch <- prometheus.MustNewConstMetric(pullsWaitingDesc, prometheus.GaugeValue, float64(q.PullsWaiting), q.TaskType)
	}
}

func (b *backlogCollector) set(qs []jetstream.TaskQueue) {
	b.mu.Lock()
	b.queues = qs
	b.mu.Unlock()
}

// watchBacklog reads the task queues every BacklogInterval until ctx ends.
// A failed read keeps the last values (and is logged once until a read
// succeeds again).
func (d *Dispatcher) watchBacklog(ctx context.Context) {
	t := time.NewTicker(d.cfg.BacklogInterval)
	defer t.Stop()
	failing := false
	for {
		rctx, cancel := context.WithTimeout(ctx, d.cfg.OpTimeout)
		qs, err := d.client.TaskQueues(rctx)
		cancel()
		switch {
		case err == nil:
			d.stats.backlog.set(qs)
			failing = false
		case ctx.Err() == nil && !failing:
			failing = true
			d.log.Warn().Err(err).Msg("cannot read the task queues for jetflow_task_backlog; keeping the last values")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// announce writes the dispatcher's presence record until ctx ends.
func (d *Dispatcher) announce(ctx context.Context) {
	p := jetstream.Presence{
		Kind: jetstream.PresenceDispatcher, Name: d.cfg.Name, Host: jetstream.ProcessHost(), PID: os.Getpid(),
		Version: jetstream.BuildVersion(), Started: time.Now(), Shards: d.cfg.Shards,
	}
	d.client.AnnounceEvery(ctx, d.cfg.PresenceInterval, func() jetstream.Presence {
		s := d.Stats()
		p.Consuming = d.consuming.Load()
		p.InstancesStarted, p.InstancesFinished = s.Started, s.Completed+s.Failed+s.Cancelled
		return p
	})
}
