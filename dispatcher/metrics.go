package dispatcher

import (
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/jetflow/jetflow/internal/promx"
	"github.com/jetflow/jetflow/workflow"
)

// Stats are the dispatcher's counters since it started, summed over
// their labels. Each field names, in its metric tag, the Prometheus
// family it sums and the label values it keeps ("family{label=value}");
// its json tag is its key in `jetflow stats` and in the "dispatcher
// stats" log line. This struct is the one list: the log line, the JSON
// and the sums are all made from it (statFields), and the Prometheus
// families are the ones in newMetrics.
type Stats struct {
	Triggers          uint64 `json:"triggers" metric:"jetflow_trigger_messages_total"`
	Events            uint64 `json:"events" metric:"jetflow_event_messages_total"`
	Started           uint64 `json:"started" metric:"jetflow_workflows_started_total"`
	Completed         uint64 `json:"completed" metric:"jetflow_workflows_finished_total{status=completed}"`
	Failed            uint64 `json:"failed" metric:"jetflow_workflows_finished_total{status=failed}"`
	Cancelled         uint64 `json:"cancelled" metric:"jetflow_workflows_finished_total{status=cancelled}"`
	DuplicateTriggers uint64 `json:"duplicate_triggers" metric:"jetflow_duplicates_dropped_total{layer=instance}"`
	DuplicateDiffer   uint64 `json:"duplicate_differ" metric:"jetflow_duplicate_payloads_differ_total"`
	Reruns            uint64 `json:"reruns" metric:"jetflow_reruns_started_total"`
	StaleEvents       uint64 `json:"stale_events" metric:"jetflow_duplicates_dropped_total{layer=stale_event}"`
	Conflicts         uint64 `json:"conflicts" metric:"jetflow_cas_conflicts_total"`
	Commits           uint64 `json:"commits" metric:"jetflow_instance_commits_total"`
	TasksPublished    uint64 `json:"tasks_published" metric:"jetflow_tasks_published_total"`
	TimersScheduled   uint64 `json:"timers_scheduled" metric:"jetflow_timers_scheduled_total"`
	Republished       uint64 `json:"republished" metric:"jetflow_republished_total"`
	Retried           uint64 `json:"retried" metric:"jetflow_event_retries_total"`
	DeadLettered      uint64 `json:"dead_lettered" metric:"jetflow_dead_letters_total"`
	ChildrenStarted   uint64 `json:"children_started" metric:"jetflow_bulk_children_started_total"`
	DuplicateChildren uint64 `json:"duplicate_children" metric:"jetflow_duplicates_dropped_total{layer=child_barrier}"`
	Recounts          uint64 `json:"recounts" metric:"jetflow_bulk_recounts_total"`
	RecountsScheduled uint64 `json:"recounts_scheduled" metric:"jetflow_bulk_recounts_scheduled_total"`
	ReconcilePokes    uint64 `json:"reconcile_pokes" metric:"jetflow_bulk_reconcile_pokes_total"`
	RepairsSent       uint64 `json:"repairs_sent" metric:"jetflow_repairs_total{outcome=sent}"`
	RepairsApplied    uint64 `json:"repairs_applied" metric:"jetflow_repairs_total{outcome=applied}"`
	RepairsLost       uint64 `json:"repairs_lost" metric:"jetflow_repairs_total{outcome=lost}"`
	TimersFired       uint64 `json:"timers_fired" metric:"jetflow_timers_fired_total"`
	Signals           uint64 `json:"signals" metric:"jetflow_signals_applied_total"`
	PullStalls        uint64 `json:"pull_stalls" metric:"jetflow_pull_stalls_total"`
	LoopRestarts      uint64 `json:"loop_restarts" metric:"jetflow_loop_restarts_total"`
	SchedulesStarted  uint64 `json:"schedules_started" metric:"jetflow_schedule_fires_total{outcome=started}"`
	SchedulesSkipped  uint64 `json:"schedules_skipped" metric:"jetflow_schedule_fires_total{outcome=skipped}"`
}

// statField is one field of Stats: where it is, its key, and what it sums.
type statField struct {
	index  int
	key    string
	family string
	match  map[string]string // label values a series must have
}

// statFields reads the Stats tags once.
var statFields = sync.OnceValue(func() []statField {
	t := reflect.TypeFor[Stats]()
	out := make([]statField, 0, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		sf := statField{index: i, key: f.Tag.Get("json"), family: f.Tag.Get("metric")}
		if name, labels, ok := strings.Cut(sf.family, "{"); ok {
			sf.family, sf.match = name, map[string]string{}
			for _, kv := range strings.Split(strings.TrimSuffix(labels, "}"), ",") {
				k, v, _ := strings.Cut(kv, "=")
				sf.match[k] = v
			}
		}
		out = append(out, sf)
	}
	return out
})

// statsFrom sums gathered families into Stats.
func statsFrom(families []*dto.MetricFamily) Stats {
	byName := make(map[string]*dto.MetricFamily, len(families))
	for _, f := range families {
		byName[f.GetName()] = f
	}
	var s Stats
	v := reflect.ValueOf(&s).Elem()
	for _, sf := range statFields() {
		f := byName[sf.family]
		if f == nil {
			continue
		}
		var sum float64
		for _, m := range f.GetMetric() {
			if matches(m, sf.match) {
				sum += m.GetCounter().GetValue()
			}
		}
		v.Field(sf.index).SetUint(uint64(sum))
	}
	return s
}

func matches(m *dto.Metric, want map[string]string) bool {
	found := 0
	for _, lp := range m.GetLabel() {
		if v, ok := want[lp.GetName()]; ok {
			if v != lp.GetValue() {
				return false
			}
			found++
		}
	}
	return found == len(want)
}

// MarshalZerologObject logs the counters as one object, under their json
// keys.
func (s Stats) MarshalZerologObject(e *zerolog.Event) {
	v := reflect.ValueOf(s)
	for _, sf := range statFields() {
		e.Uint64(sf.key, v.Field(sf.index).Uint())
	}
}

// count is a counter without labels. Add takes a count, as the call sites
// have one.
type count struct{ c prometheus.Counter }

func (c count) Add(n uint64) { c.c.Add(float64(n)) }

// Dead-letter reasons: the reason label of jetflow_dead_letters_total
// (the full reason is in the dead letter's Jetflow-Reason header).
const (
	reasonMalformed       = "malformed"         // cannot be decoded, or fields are missing
	reasonMisrouted       = "misrouted"         // published on a subject that does not match it
	reasonTooLarge        = "too_large"         // over the payload limit
	reasonBadPayload      = "bad_payload"       // not one JSON value (or msgpack) within the limits
	reasonUnknownWorkflow = "unknown_workflow"  // no such definition (or version)
	reasonNoBinding       = "no_binding"        // no definition is triggered by the subject
	reasonEventKey        = "event_key"         // no event key could be taken, or too many runs
	reasonUnknownInstance = "unknown_instance"  // an event for an instance that does not exist
	reasonPermanent       = "permanent_error"   // a stored value cannot be read or written, ever
	reasonGaveUp          = "gave_up"           // failed transiently MaxDeliveries times
	reasonTimerJunk       = "timer_junk"        // a message on a timer subject that is no jetflow timer
	reasonUnknownTaskType = "unknown_task_type" // a task of a type no definition uses (the task guard)
	reasonForged          = "forged_result"     // a result without a valid task token (Config.TaskTokens)
)

// Repair kinds: the kind label of jetflow_repairs_total.
const (
	repairTask  = "task"  // a task attempt presumed lost
	repairTimer = "timer" // a timer past its grace
	repairBulk  = "bulk"  // a stale bulk step reconciled
)

// metrics are the dispatcher's Prometheus families. They always count
// (a counter costs an atomic add); Collector exposes them.
type metrics struct {
	// all is every family, as one collector; reg gathers it for stats.
	all promx.Collectors
	reg *prometheus.Registry

	triggers, events                                  count
	conflicts, commits, timersScheduled, republished  count
	retried, childrenStarted, recounts                count
	recountsScheduled, reconcilePokes, timersFired    count
	signals, duplicateDiffer                          count
	slotOps, rateDenied, slotsRepaired                count
	started, reruns                                   *prometheus.CounterVec // workflow
	finished                                          *prometheus.CounterVec // workflow, status
	duration                                          *prometheus.HistogramVec
	stepsFinished                                     *prometheus.CounterVec // workflow, step, status
	duplicates                                        *prometheus.CounterVec // layer
	tasksPublished                                    *prometheus.CounterVec // task_type
	deadLetters                                       *prometheus.CounterVec // reason
	repairs                                           *prometheus.CounterVec // kind, outcome
	loopRestarts                                      *prometheus.CounterVec // loop
	applySeconds                                      prometheus.Histogram
	bulkChildren                                      *prometheus.GaugeVec // state
	backlog                                           *backlogCollector
	duplicateTriggers, staleEvents, duplicateChildren count
	repairsApplied, repairsLost                       count
	scheduleFires                                     *prometheus.CounterVec // outcome
	effectRequests                                    *prometheus.CounterVec // op, outcome
}

// durationBuckets span a workflow's life: from milliseconds to a day.
var durationBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400}

func newMetrics(pullStalls, badMetadata func() uint64) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	f := func(name, help string) count {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
		m.all = append(m.all, c)
		return count{c}
	}
	vec := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		m.all = append(m.all, c)
		return c
	}
	m.triggers = f("jetflow_trigger_messages_total", "Trigger messages received (user subjects, explicit starts and bulk child starts).")
	m.events = f("jetflow_event_messages_total", "Event messages received (results, timers, signals, cancels, child completions, repairs).")
	m.started = vec("jetflow_workflows_started_total", "Instances created.", "workflow")
	m.reruns = vec("jetflow_reruns_started_total", "New runs started by trigger.on_duplicate: rerun (also counted as started).", "workflow")
	m.finished = vec("jetflow_workflows_finished_total", "Instances that reached a terminal status (completed, failed, cancelled).", "workflow", "status")
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "jetflow_workflow_duration_seconds", Help: "Time from an instance's creation to its end.", Buckets: durationBuckets,
	}, []string{"workflow", "status"})
	m.all = append(m.all, m.duration)
	m.stepsFinished = vec("jetflow_steps_finished_total", "Steps that ended (completed or failed for good).", "workflow", "step", "status")
	m.duplicates = vec("jetflow_duplicates_dropped_total", "Duplicates stopped, by the layer that stopped them: instance (a start for an existing instance, the KV guard), child_barrier (a bulk child's completion already counted), stale_event (a result, timer or repair that changed nothing).", "layer")
	m.duplicateTriggers = count{m.duplicates.WithLabelValues("instance")}
	m.staleEvents = count{m.duplicates.WithLabelValues("stale_event")}
	m.duplicateChildren = count{m.duplicates.WithLabelValues("child_barrier")}
	m.duplicateDiffer = f("jetflow_duplicate_payloads_differ_total", "Duplicate starts whose payload differed from the first one's (the first one won).")
	m.conflicts = f("jetflow_cas_conflicts_total", "Instance writes lost to another writer (compare-and-swap conflicts); the events are applied again.")
	m.commits = f("jetflow_instance_commits_total", "Instance writes that committed.")
	m.tasksPublished = vec("jetflow_tasks_published_total", "Task messages published.", "task_type")
	m.timersScheduled = f("jetflow_timers_scheduled_total", "Timers scheduled (message schedules).")
	m.republished = f("jetflow_republished_total", "Owed work published again after an event was found already applied.")
	m.retried = f("jetflow_event_retries_total", "Messages handed back for a later retry after a transient failure.")
	m.deadLetters = vec("jetflow_dead_letters_total", "Messages dead-lettered by the dispatcher, by reason class (the full reason is in the dead letter).", "reason")
	m.childrenStarted = f("jetflow_bulk_children_started_total", "Bulk children published.")
	m.recounts = f("jetflow_bulk_recounts_total", "Bulk counts rebuilt from the per-child barriers.")
	m.recountsScheduled = f("jetflow_bulk_recounts_scheduled_total", "Recounts deferred while throttled (a message schedule).")
	m.reconcilePokes = f("jetflow_bulk_reconcile_pokes_total", "Children without a barrier poked by a stale bulk step's reconciliation.")
	m.repairs = vec("jetflow_repairs_total", "Repairs by kind (task, timer, bulk) and outcome: sent by the repair loop; applied or lost (the work had finished) for task repairs.", "kind", "outcome")
	m.repairsApplied = count{m.repairs.WithLabelValues(repairTask, "applied")}
	m.repairsLost = count{m.repairs.WithLabelValues(repairTask, "lost")}
	m.loopRestarts = vec("jetflow_loop_restarts_total", "Background loops of the dispatcher that failed and were restarted, by loop: definitions (the watch of the definitions bucket), repair (the repair loop), stats (the jetflow stats responder), effects (the effect service), pauses (the watch of the pause records).", "loop")
	m.scheduleFires = vec("jetflow_schedule_fires_total", "Fires of schedules by outcome: started (an instance), skipped (paused, overlap: skip, out of order), removed (the schedule was removed).", "outcome")
	m.effectRequests = vec("jetflow_effect_requests_total", "Effect requests of workers running once steps (task tokens only), by op (claim, record) and outcome: claimed, exists, recorded, conflict, refused (forged or malformed: nothing written), failed (the bucket could not be read or written).", "op", "outcome")
	m.timersFired = f("jetflow_timers_fired_total", "Timer events that changed an instance.")
	m.signals = f("jetflow_signals_applied_total", "Signals applied to an instance.")
	m.slotOps = f("jetflow_slot_ops_total", "Concurrency slot acquires and releases carried out (docs/flow-control.md).")
	m.rateDenied = f("jetflow_rate_limited_total", "Attempt starts a rate limit made wait.")
	m.slotsRepaired = f("jetflow_slots_repaired_total", "Slot holders and waiters the repair loop dropped because their instance no longer held or waited for the slot.")
	m.applySeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "jetflow_event_apply_seconds", Help: "Time of one pass over an instance's events: read, apply, write, publish.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
	m.all = append(m.all, m.applySeconds)
	m.all = append(m.all, prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "jetflow_pull_stalls_total", Help: "Pulls from NATS presumed lost (no heartbeat) and replaced.",
	}, func() float64 { return float64(pullStalls()) }))
	m.all = append(m.all, prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "jetflow_bad_metadata_total", Help: "Messages whose JetStream metadata (delivery count, stream sequence) could not be read; each was handled as a first delivery. Should stay 0.",
	}, func() float64 { return float64(badMetadata()) }))
	m.bulkChildren = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "jetflow_bulk_children", Help: "Children of the running bulk steps by state: pending (not dispatched yet), running, completed, failed. Refreshed by the repair loop.",
	}, []string{"state"})
	m.all = append(m.all, m.bulkChildren)
	m.backlog = &backlogCollector{}
	m.all = append(m.all, m.backlog)
	m.reg.MustRegister(m.all)
	return m
}

// stats sums the counters.
func (m *metrics) stats() Stats {
	fams, err := m.reg.Gather()
	if err != nil {
		return Stats{}
	}
	return statsFrom(fams)
}

// finishedSteps counts the steps that ended between before and after.
func (m *metrics) finishedSteps(before, after *workflow.Instance) {
	for name, st := range after.Steps {
		if st.Status != workflow.StepCompleted && st.Status != workflow.StepFailed {
			continue
		}
		if before != nil {
			if b := before.Steps[name]; b != nil && b.Status == st.Status {
				continue
			}
		}
		m.stepsFinished.WithLabelValues(after.Workflow, name, string(st.Status)).Inc()
	}
}

// Collector exposes the dispatcher's metrics (see docs/observability.md)
// for a Prometheus registry: reg.MustRegister(d.Collector()).
func (d *Dispatcher) Collector() prometheus.Collector { return d.stats.all }

// observeDuration records an ended instance's duration.
func (m *metrics) observeDuration(in *workflow.Instance) {
	if in.Ended.IsZero() || in.Created.IsZero() {
		return
	}
	m.duration.WithLabelValues(in.Workflow, string(in.Status)).Observe(max(in.Ended.Sub(in.Created), 0).Seconds())
}

// repairsSent counts the repairs a sweep published, by kind.
func (m *metrics) repairsSent(events []workflow.OutEvent) {
	for _, ev := range events {
		kind := repairTask
		switch ev.Event.Kind {
		case workflow.EventTimer:
			kind = repairTimer
		case workflow.EventRecount:
			kind = repairBulk
		}
		m.repairs.WithLabelValues(kind, "sent").Inc()
	}
}

// sinceSeconds is the time since start in seconds.
func sinceSeconds(start time.Time) float64 { return time.Since(start).Seconds() }

// bulkCounts are the children of running bulk steps by state.
type bulkCounts struct{ pending, running, completed, failed int }

// bulkChildren counts the children of an instance's running bulk steps.
func bulkChildren(def *workflow.Definition, in *workflow.Instance) bulkCounts {
	var c bulkCounts
	for name, st := range in.Steps {
		if s, ok := def.Step(name); !ok || s.Kind != workflow.KindBulk || st.Status != workflow.StepRunning {
			continue
		}
		c.pending += max(st.Total-st.Cursor, 0)
		c.running += max(st.InFlight(), 0)
		c.completed += st.Done
		c.failed += st.ChildFailed
	}
	return c
}

// countChildren sets jetflow_bulk_children from the running instances
// the repair loop follows.
func (r *repairLoop) countChildren() {
	r.mu.Lock()
	var sum bulkCounts
	for _, w := range r.running {
		sum.pending += w.bulk.pending
		sum.running += w.bulk.running
		sum.completed += w.bulk.completed
		sum.failed += w.bulk.failed
	}
	r.mu.Unlock()
	g := r.d.stats.bulkChildren
	g.WithLabelValues("pending").Set(float64(sum.pending))
	g.WithLabelValues("running").Set(float64(sum.running))
	g.WithLabelValues("completed").Set(float64(sum.completed))
	g.WithLabelValues("failed").Set(float64(sum.failed))
}
