package dispatcher

import (
	"context"
	"sync"

	"github.com/jetflow/jetflow/workflow"
)

// registry holds the definitions known to this dispatcher.
type registry struct {
	mu       sync.RWMutex
	versions map[string]map[int]*workflow.Definition
	latest   map[string]*workflow.Definition
}

func newRegistry() *registry {
	return &registry{versions: map[string]map[int]*workflow.Definition{}, latest: map[string]*workflow.Definition{}}
}

func (r *registry) add(def *workflow.Definition) {
	r.mu.Lock()
	defer r.mu.Unlock()
	vs := r.versions[def.Name]
	if vs == nil {
		vs = map[int]*workflow.Definition{}
		r.versions[def.Name] = vs
	}
	vs[def.Version] = def
	if cur := r.latest[def.Name]; cur == nil || def.Version > cur.Version {
		r.latest[def.Name] = def
	}
}

func (r *registry) get(name string, version int) *workflow.Definition {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.versions[name][version]
}

func (r *registry) latestOf(name string) *workflow.Definition {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.latest[name]
}

// bound returns the latest definitions whose trigger matches subject.
func (r *registry) bound(subject string) []*workflow.Definition {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []*workflow.Definition
	for _, def := range r.latest {
		if def.Trigger != nil && workflow.SubjectMatches(def.Trigger.Subject, subject) {
			out = append(out, def)
		}
	}
	return out
}

func (r *registry) triggerSubjects() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	for _, def := range r.latest {
		if def.Trigger != nil {
			out = append(out, def.Trigger.Subject)
		}
	}
	return out
}

// latestAll returns the latest definition of every workflow.
func (r *registry) latestAll() []*workflow.Definition {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*workflow.Definition, 0, len(r.latest))
	for _, def := range r.latest {
		out = append(out, def)
	}
	return out
}

// latestDefinition returns the latest definition of the workflow name:
// the one this dispatcher holds, else the one in the definitions bucket
// (read within OpTimeout), so that an event for a workflow registered a
// moment ago is not rejected before the watch delivers its definition.
// It returns nil when the workflow is unknown or the bucket cannot be
// read.
func (d *Dispatcher) latestDefinition(ctx context.Context, name string) *workflow.Definition {
	if def := d.defs.latestOf(name); def != nil {
		return def
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.OpTimeout)
	defer cancel()
	return d.latestFromStore(ctx, name)
}
