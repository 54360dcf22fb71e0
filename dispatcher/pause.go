package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// pauses is the dispatcher's view of the pause records (jetflow pause),
// kept by a watch of them. Apply reads it through Event.Paused: an
// attempt that is to start while its workflow is paused waits at the
// pause gate (workflow/pause.go). When a workflow is resumed, resumed is
// poked and the repair loop releases the held attempts at once; it also
// releases them on every sweep while they are held and their workflow is
// not paused, so an attempt held by a pass that read the pause just
// before the resume is released too.
type pauses struct {
	mu     sync.RWMutex
	paused map[string]bool
	// rev is the revision of the last pause record applied; dispatchers
	// report it in their stats answer, and jetflow pause waits for it.
	rev atomic.Uint64
	// resumed has a value when a workflow was resumed since the repair
	// loop last looked.
	resumed chan struct{}
}

func newPauses() *pauses {
	return &pauses{paused: map[string]bool{}, resumed: make(chan struct{}, 1)}
}

// is reports whether the workflow is paused.
func (p *pauses) is(wf string) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.paused[wf]
}

func (p *pauses) apply(st jetstream.PauseState) {
	p.mu.Lock()
	was := p.paused[st.Workflow]
	if st.Paused {
		p.paused[st.Workflow] = true
	} else {
		delete(p.paused, st.Workflow)
	}
	p.mu.Unlock()
	if st.Revision > p.rev.Load() {
		p.rev.Store(st.Revision)
	}
	if was && !st.Paused {
		select {
		case p.resumed <- struct{}{}:
		default:
		}
	}
}

// list returns the paused workflows, sorted.
func (p *pauses) list() []string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make([]string, 0, len(p.paused))
	for wf := range p.paused {
		out = append(out, wf)
	}
	sort.Strings(out)
	return out
}

// startPauses starts the watch of the pause records under watchCtx and
// returns once the stored ones were applied (or ctx ended); an error
// when the watch cannot start.
func (d *Dispatcher) startPauses(ctx, watchCtx context.Context, wg *sync.WaitGroup) error {
	ready := make(chan struct{})
	var once sync.Once
	watchErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := d.watchPauses(watchCtx, func() { once.Do(func() { close(ready) }) })
		select {
		case <-ready:
		default:
			watchErr <- err // Run cannot start
			return
		}
		d.supervise(watchCtx, loopPauses, err, func(ctx context.Context) error {
			return d.watchPauses(ctx, func() {})
		})
	}()
	select {
	case <-ready:
		return nil
	case err := <-watchErr:
		if err == nil {
			err = errors.New("the watch ended before it delivered the stored records")
		}
		return fmt.Errorf("watch pause records: %w", err)
	case <-ctx.Done():
		return nil
	}
}

// watchPauses follows the pause records until ctx ends; ready is called
// once the stored ones were applied.
func (d *Dispatcher) watchPauses(ctx context.Context, ready func()) error {
	return d.client.WatchPauses(ctx, ready, func(st jetstream.PauseState) {
		if st.Paused != d.pauses.is(st.Workflow) {
			d.log.Info().Str("workflow", st.Workflow).Bool("paused", st.Paused).Uint64("revision", st.Revision).Msg("workflow pause changed")
		}
		d.pauses.apply(st)
	})
}

// heldAttempts are the attempts of one instance that wait at the pause
// gate, as of the write the repair loop last decoded.
type heldAttempts struct {
	workflow string
	holders  []workflow.Holder
}

// noteHeld records (or forgets) the attempts of in held by a pause.
func (r *repairLoop) noteHeld(in *workflow.Instance) {
	hs := workflow.PausedAttempts(in)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(hs) == 0 {
		delete(r.held, in.ID)
		return
	}
	r.held[in.ID] = heldAttempts{workflow: in.Workflow, holders: hs}
}

// releaseHeld sends the release of every attempt held by a pause whose
// workflow is not paused now. round goes into the message ids: the same
// round is published once; a later round again (a release applied by a
// dispatcher that still saw the pause changes nothing, and the next
// round releases the attempt).
func (r *repairLoop) releaseHeld(ctx context.Context, round string) {
	d := r.d
	var events []workflow.OutEvent
	r.mu.Lock()
	for _, h := range r.held {
		if d.pauses.is(h.workflow) {
			continue
		}
		for _, x := range h.holders {
			events = append(events, workflow.PauseRelease(x, round))
		}
	}
	r.mu.Unlock()
	if len(events) == 0 {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := d.client.PublishEvents(pctx, events); err != nil {
		d.log.Warn().Err(err).Int("releases", len(events)).Msg("releasing attempts held by a pause failed; the next sweep retries")
		return
	}
	d.log.Debug().Int("releases", len(events)).Str("round", round).Msg("attempts held by a pause released")
}

// releaseRound names the repair loop's release round at now: one a
// minute, so a release that a dispatcher with a stale view ignored is
// sent again within a minute.
func releaseRound(now time.Time) string { return fmt.Sprintf("repair-%d", now.Unix()/60) }
