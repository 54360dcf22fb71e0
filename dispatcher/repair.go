package dispatcher

import (
	"context"
	"sync"
	"time"

	"github.com/jetflow/jetflow/jetstream"
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
	d  *Dispatcher
	mu sync.Mutex
	// running holds the latest write of every running instance, decoded
	// in full only when a sweep needs it (most instances change again or
	// end before that).
	running map[string]*watched
	// sent remembers the repair message ids this loop already published
	// for each running instance, so a sweep does not publish the same
	// repair again while the first is still on its way.
	sent map[string]map[string]bool
}

// watched is the latest write of one running instance.
type watched struct {
	update *jetstream.InstanceUpdate
	inst   *workflow.Instance // decoded on first use
}

func (r *repairLoop) run(ctx context.Context) error {
	r.running = map[string]*watched{}
	r.sent = map[string]map[string]bool{}
	ready := make(chan struct{})
	var once sync.Once
	errc := make(chan error, 1)
	go func() {
		errc <- r.d.client.WatchInstanceUpdates(ctx, true, func() { once.Do(func() { close(ready) }) }, r.observe)
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

func (r *repairLoop) observe(u *jetstream.InstanceUpdate) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if u.Status.Terminal() {
		delete(r.running, u.ID)
		delete(r.sent, u.ID)
		return
	}
	if cur, ok := r.running[u.ID]; ok && cur.update.Events > u.Events {
		return // an older revision delivered late
	}
	r.running[u.ID] = &watched{update: u}
}

// decoded returns the watched write's instance, decoding it once.
func (r *repairLoop) decoded(w *watched) (*workflow.Instance, error) {
	r.mu.Lock()
	in := w.inst
	r.mu.Unlock()
	if in != nil {
		return in, nil
	}
	in, err := w.update.Decode()
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	w.inst = in
	r.mu.Unlock()
	return in, nil
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
	snapshot := make([]*watched, 0, len(r.running))
	for _, w := range r.running {
		snapshot = append(snapshot, w)
	}
	r.mu.Unlock()
	var events []workflow.OutEvent
	for _, w := range snapshot {
		in, err := r.decoded(w)
		if err != nil {
			d.log.Warn().Err(err).Msg("repair loop: undecodable instance")
			continue
		}
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
