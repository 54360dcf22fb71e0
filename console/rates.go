package console

import (
	"encoding/json"
	"sort"
	"sync"
	"time"

	"github.com/jetflow/jetflow/dispatcher"
)

// rates turns the dispatchers' counters (jetflow.stats answers, which
// count since each dispatcher started) into rates: it keeps the samples
// of the last rateWindow and divides what moved by the time between the
// oldest and the newest. A dispatcher whose counter went down restarted;
// its new count is what moved.
type rates struct {
	mu      sync.Mutex
	samples []sample
}

// rateWindow is how far back a rate looks.
const rateWindow = time.Minute

type sample struct {
	at    time.Time
	stats map[string]dispatcher.Stats // by dispatcher name
}

func newRates() *rates { return &rates{} }

// dispatcherStats is one answer on jetflow.stats.
type dispatcherStats struct {
	Dispatcher string           `json:"dispatcher"`
	Stats      dispatcher.Stats `json:"stats"`
}

// decodeStats reads jetflow.stats answers; undecodable ones are skipped.
func decodeStats(answers []json.RawMessage) map[string]dispatcher.Stats {
	out := map[string]dispatcher.Stats{}
	for _, a := range answers {
		var ds dispatcherStats
		if json.Unmarshal(a, &ds) == nil && ds.Dispatcher != "" {
			out[ds.Dispatcher] = ds.Stats
		}
	}
	return out
}

// rateView is what the overview shows.
type rateView struct {
	// Dispatchers that answered, by name, with their totals.
	Dispatchers []namedStats
	// Totals sum the dispatchers' counters.
	Totals dispatcher.Stats
	// Started, Completed, Failed, Cancelled per second over Over (zero
	// Over: not enough samples yet).
	Started, Completed, Failed, Cancelled float64
	Over                                  time.Duration
}

type namedStats struct {
	Name  string
	Stats dispatcher.Stats
}

// add records a sample taken at now and returns the view.
func (r *rates) add(now time.Time, stats map[string]dispatcher.Stats) rateView {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples = append(r.samples, sample{at: now, stats: stats})
	keep := 0
	for i, s := range r.samples {
		if now.Sub(s.at) <= rateWindow {
			keep = i
			break
		}
	}
	r.samples = r.samples[keep:]
	var v rateView
	for name, s := range stats {
		v.Dispatchers = append(v.Dispatchers, namedStats{Name: name, Stats: s})
		v.Totals.Started += s.Started
		v.Totals.Completed += s.Completed
		v.Totals.Failed += s.Failed
		v.Totals.Cancelled += s.Cancelled
		v.Totals.DeadLettered += s.DeadLettered
		v.Totals.TasksPublished += s.TasksPublished
	}
	sort.Slice(v.Dispatchers, func(i, j int) bool { return v.Dispatchers[i].Name < v.Dispatchers[j].Name })
	first := r.samples[0]
	dt := now.Sub(first.at)
	if dt < 500*time.Millisecond {
		return v
	}
	var started, completed, failed, cancelled uint64
	for name, s := range stats {
		old := first.stats[name] // zero for a dispatcher that came since
		started += moved(old.Started, s.Started)
		completed += moved(old.Completed, s.Completed)
		failed += moved(old.Failed, s.Failed)
		cancelled += moved(old.Cancelled, s.Cancelled)
	}
	sec := dt.Seconds()
	v.Over = dt.Round(time.Second)
	v.Started, v.Completed, v.Failed, v.Cancelled = float64(started)/sec, float64(completed)/sec, float64(failed)/sec, float64(cancelled)/sec
	return v
}

// moved is how much a counter moved from old to now; a counter that went
// down was reset (its dispatcher restarted).
func moved(old, now uint64) uint64 {
	if now < old {
		return now
	}
	return now - old
}
