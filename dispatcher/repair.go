package dispatcher

import (
	"context"
	"sync"
	"time"

	"github.com/jetflow/jetflow/workflow"
)

// repairLoop finds instances that stopped making progress and sends them
// repair events. It decides from the instance states it watches (the KV
// watch delivers every write), and it never writes an instance itself:
// every repair is an event that goes through the shard's read -> Apply ->
// CAS path, like any other. Several repair loops (one per dispatcher
// replica) may run at once; they publish the same deterministic message
// ids, and a repair that arrives after the work finished changes nothing.
type repairLoop struct {
	d       *Dispatcher
	mu      sync.Mutex
	running map[string]*workflow.Instance
	// sent remembers the repair message ids this loop already published
	// for each running instance, so a sweep does not publish the same
	// repair again while the first is still on its way.
	sent map[string]map[string]bool
}

func (r *repairLoop) run(ctx context.Context) error {
	r.running = map[string]*workflow.Instance{}
	r.sent = map[string]map[string]bool{}
	ready := make(chan struct{})
	var once sync.Once
	errc := make(chan error, 1)
	go func() {
		errc <- r.d.client.WatchInstances(ctx, true, func() { once.Do(func() { close(ready) }) }, r.observe)
	}()
	select {
	case <-ready:
	case err := <-errc:
		return err
	case <-ctx.Done():
		return <-errc
	}
	t := time.NewTicker(r.d.cfg.RepairInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return <-errc
		case err := <-errc:
			return err
		case <-t.C:
			r.sweep(ctx)
		}
	}
}

func (r *repairLoop) observe(in *workflow.Instance) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if in.Status.Terminal() {
		delete(r.running, in.ID)
		delete(r.sent, in.ID)
		return
	}
	if cur, ok := r.running[in.ID]; ok && cur.Events > in.Events {
		return // an older revision delivered late
	}
	r.running[in.ID] = in
}

func (r *repairLoop) sweep(ctx context.Context) {
	d := r.d
	now := d.cfg.Clock()
	policy := workflow.RepairPolicy{
		StaleTask:  d.cfg.StaleTask,
		TimerGrace: d.cfg.TimerGrace,
		StaleBulk:  d.cfg.StaleBulk,
		Force:      d.cfg.ForceRepairs,
	}
	r.mu.Lock()
	snapshot := make([]*workflow.Instance, 0, len(r.running))
	for _, in := range r.running {
		snapshot = append(snapshot, in)
	}
	r.mu.Unlock()
	var events []workflow.OutEvent
	for _, in := range snapshot {
		def, err := d.definition(ctx, in.Workflow, in.Version)
		if err != nil {
			continue
		}
		for _, ev := range workflow.Repairs(def, in, now, policy) {
			r.mu.Lock()
			seen := r.sent[in.ID]
			if seen == nil {
				seen = map[string]bool{}
				r.sent[in.ID] = seen
			}
			dup := seen[ev.MsgID]
			seen[ev.MsgID] = true
			r.mu.Unlock()
			if !dup {
				events = append(events, ev)
			}
		}
	}
	if len(events) == 0 {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := d.client.PublishEvents(pctx, events); err != nil {
		d.log.Warn().Err(err).Int("repairs", len(events)).Msg("publishing repairs failed; the next sweep retries")
		return
	}
	d.stats.repairsSent.Add(uint64(len(events)))
	d.log.Debug().Int("repairs", len(events)).Msg("repairs sent")
}
