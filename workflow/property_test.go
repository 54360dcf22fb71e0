package workflow_test

import (
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/workflow"
)

// defGen generates random valid definitions: chains of tasks, parallel
// steps with disjoint branches, and switches whose cases rejoin the chain.
// Steps are built from the end of each chain backwards, so every reference
// points at a step that already exists.
type defGen struct {
	r     *rand.Rand
	steps []string
	n     int
}

const (
	genMaxDepth = 3
	genMaxSteps = 30
	genInputs   = 4 // switch conditions read input.k0 .. input.k3
)

func genDefinition(r *rand.Rand) string {
	g := &defGen{r: r}
	start := g.chain(0, "")
	var b strings.Builder
	fmt.Fprintf(&b, "name: gen\nversion: 1\nstart: %s\nsteps:\n", start)
	for _, s := range g.steps {
		b.WriteString("  - " + s + "\n")
	}
	return b.String()
}

func (g *defGen) name(prefix string) string {
	g.n++
	return fmt.Sprintf("%s%d", prefix, g.n)
}

// chain builds 1-3 steps that end by continuing with cont ("" ends the
// chain) and returns the first.
func (g *defGen) chain(depth int, cont string) string {
	first := cont
	for range 1 + g.r.Intn(3) {
		first = g.node(depth, first)
	}
	return first
}

func (g *defGen) node(depth int, next string) string {
	choice := g.r.Intn(10)
	if depth >= genMaxDepth || g.n >= genMaxSteps {
		choice = 0
	}
	switch {
	case choice < 6:
		return g.task(next, depth)
	case choice < 8:
		name := g.name("p")
		var branches []string
		for range 1 + g.r.Intn(3) {
			branches = append(branches, g.chain(depth+1, ""))
		}
		g.add(fmt.Sprintf("{name: %s, kind: parallel, branches: [%s]%s}", name, strings.Join(branches, ", "), field("next", next)))
		return name
	default:
		name := g.name("s")
		var cases []string
		for range 1 + g.r.Intn(2) {
			target := g.chain(depth+1, next)
			cases = append(cases, fmt.Sprintf("{when: 'input.k%d == %d', next: %s}", g.r.Intn(genInputs), g.r.Intn(2), target))
		}
		def := ""
		switch g.r.Intn(3) {
		case 0: // no default: no match ends the chain
		case 1:
			def = next
		case 2:
			def = g.chain(depth+1, next)
		}
		g.add(fmt.Sprintf("{name: %s, kind: switch, cases: [%s]%s}", name, strings.Join(cases, ", "), field("default", def)))
		return name
	}
}

func (g *defGen) task(next string, depth int) string {
	name := g.name("t")
	extra := fmt.Sprintf(", retry: {max_attempts: %d, initial_interval: 1s}", 1+g.r.Intn(3))
	if g.r.Intn(3) == 0 {
		extra += ", timeout: 5s"
	}
	if g.r.Intn(4) == 0 && g.n < genMaxSteps {
		// on_failure continues with the same continuation.
		extra += ", on_failure: " + g.task(next, depth+1)
	}
	g.add(fmt.Sprintf("{name: %s, kind: task, task: work%s%s}", name, field("next", next), extra))
	return name
}

func (g *defGen) add(step string) { g.steps = append(g.steps, step) }

func field(key, value string) string {
	if value == "" {
		return ""
	}
	return ", " + key + ": " + value
}

// work is one thing the simulated world can deliver back to Apply.
type work struct {
	step    string
	attempt int
	timer   string // timer id; empty for a task result
}

// sim drives one instance with events in a random order, with duplicates
// and stale results, and checks the invariants after every Apply.
type sim struct {
	t        testing.TB
	r        *rand.Rand
	def      *workflow.Definition
	data     memData
	id       string
	now      time.Time
	inst     *workflow.Instance
	pool     []work
	held     map[string][]work // success mode: timeouts released after the result
	emitted  map[string]map[int]bool
	finished int // transitions into a terminal state
	applied  int
	// allSucceed: every task result is a success and timeouts fire only
	// after the attempt reported (so they are stale).
	allSucceed bool
}

func newSim(t testing.TB, r *rand.Rand, def *workflow.Definition, allSucceed bool) *sim {
	s := &sim{
		t: t, r: r, def: def, allSucceed: allSucceed,
		data:    memData{},
		id:      workflow.InstanceID(def.Name, "k"),
		now:     t0,
		held:    map[string][]work{},
		emitted: map[string]map[int]bool{},
	}
	in := map[string]any{}
	for i := range genInputs {
		in[fmt.Sprintf("k%d", i)] = r.Intn(2)
	}
	s.data[workflow.InputKey(s.id)] = in
	return s
}

// apply applies ev and checks every invariant on the outcome.
func (s *sim) apply(ev workflow.Event) workflow.Decision {
	s.t.Helper()
	ev.Instance = s.id
	s.applied++
	before := s.inst.Clone()
	dec, err := workflow.Apply(s.def, s.inst, ev, s.now, s.data)
	require.NoError(s.t, err)
	require.Equal(s.t, before, s.inst, "Apply modified its input")
	if !dec.Changed {
		require.Same(s.t, s.inst, dec.Instance)
		require.Empty(s.t, dec.Tasks)
		require.Empty(s.t, dec.Timers)
		require.Empty(s.t, dec.Children)
		require.Empty(s.t, dec.Events)
		return dec
	}
	if s.inst != nil {
		require.False(s.t, s.inst.Status.Terminal(), "a terminal instance changed on %+v", ev)
	}
	requireForward(s.t, s.inst, dec.Instance)
	if dec.Instance.Status.Terminal() {
		s.finished++
		require.Equal(s.t, 1, s.finished, "instance finished twice")
		require.Empty(s.t, dec.Tasks)
		require.Empty(s.t, dec.Timers)
		require.Empty(s.t, dec.Instance.Timers)
	}
	for _, tk := range dec.Tasks {
		if s.emitted[tk.Step] == nil {
			s.emitted[tk.Step] = map[int]bool{}
		}
		require.False(s.t, s.emitted[tk.Step][tk.Attempt], "attempt %d of step %q emitted twice", tk.Attempt, tk.Step)
		require.Equal(s.t, len(s.emitted[tk.Step])+1, tk.Attempt, "attempts of step %q are not consecutive", tk.Step)
		s.emitted[tk.Step][tk.Attempt] = true
		s.pool = append(s.pool, work{step: tk.Step, attempt: tk.Attempt})
	}
	for _, tm := range dec.Timers {
		require.Contains(s.t, dec.Instance.Timers, tm.ID)
		w := work{timer: tm.ID}
		if s.allSucceed && strings.HasPrefix(tm.ID, "timeout.") {
			key := strings.TrimPrefix(tm.ID, "timeout.")
			s.held[key] = append(s.held[key], w)
			continue
		}
		s.pool = append(s.pool, w)
	}
	s.inst = dec.Instance
	requireNextRepairExact(s.t, s.def, s.inst)
	return dec
}

// requireNextRepairExact checks that NextRepair is exactly when Repairs
// starts to find work: nothing at the time it names, something a
// nanosecond later, nothing ever when it names no time.
func requireNextRepairExact(t testing.TB, def *workflow.Definition, inst *workflow.Instance) {
	t.Helper()
	p := workflow.RepairPolicy{StaleTask: 2 * time.Second, TimerGrace: time.Second, StaleBulk: 3 * time.Second}
	due := workflow.NextRepair(def, inst, p)
	if due.IsZero() {
		require.Empty(t, workflow.Repairs(def, inst, inst.Updated.Add(1000*time.Hour), p), "NextRepair says never")
		return
	}
	require.Empty(t, workflow.Repairs(def, inst, due, p), "repairs at NextRepair")
	require.NotEmpty(t, workflow.Repairs(def, inst, due.Add(time.Nanosecond), p), "no repair just after NextRepair")
}

func (s *sim) deliver(w work) {
	s.t.Helper()
	s.now = s.now.Add(time.Duration(s.r.Intn(3000)) * time.Millisecond)
	if w.timer != "" {
		s.apply(workflow.Event{Kind: workflow.EventTimer, Timer: w.timer})
		return
	}
	ev := workflow.Event{Kind: workflow.EventResult, Step: w.step, Attempt: w.attempt}
	switch roll := s.r.Intn(10); {
	case s.allSucceed || roll < 6:
		ev.OutputRef = workflow.OutputKey(s.id, w.step, w.attempt)
		s.data[ev.OutputRef] = w.step
	case roll < 9:
		ev.Error = "flaky"
	default:
		ev.Error, ev.Permanent = "broken", true
	}
	s.apply(ev)
	key := fmt.Sprintf("%s.%d", w.step, w.attempt)
	s.pool = append(s.pool, s.held[key]...)
	delete(s.held, key)
}

// stale sends an event that must change nothing.
func (s *sim) stale() {
	s.t.Helper()
	var ev workflow.Event
	switch s.r.Intn(3) {
	case 0:
		ev = workflow.Event{Kind: workflow.EventStart, EventKey: "k"}
	default:
		var names []string
		for name, st := range s.inst.Steps {
			if st.Attempt > 0 {
				names = append(names, name)
			}
		}
		if len(names) == 0 {
			return
		}
		sort.Strings(names)
		name := names[s.r.Intn(len(names))]
		st := s.inst.Steps[name]
		attempt := st.Attempt - 1 - s.r.Intn(st.Attempt) // an older attempt, or 0
		if s.r.Intn(2) == 0 {
			attempt = st.Attempt + 1
		}
		ev = workflow.Event{Kind: workflow.EventResult, Step: name, Attempt: attempt, OutputRef: "stale"}
	}
	dec := s.apply(ev)
	require.False(s.t, dec.Changed, "stale event %+v changed the instance", ev)
}

// run plays events until nothing is left to deliver.
func (s *sim) run() {
	s.t.Helper()
	s.apply(workflow.Event{Kind: workflow.EventStart, EventKey: "k", InputRef: workflow.InputKey(s.id)})
	for len(s.pool) > 0 {
		require.Less(s.t, s.applied, 10_000, "no progress")
		switch roll := s.r.Intn(20); {
		case roll == 0:
			s.stale()
			continue
		case roll == 1 && s.inst.Status == workflow.StatusRunning:
			// A repair re-publishes outstanding work: must be known work.
			out := workflow.Outstanding(s.def, s.inst)
			for _, tk := range out.Tasks {
				require.True(s.t, s.emitted[tk.Step][tk.Attempt], "Outstanding invented attempt %d of %q", tk.Attempt, tk.Step)
				s.pool = append(s.pool, work{step: tk.Step, attempt: tk.Attempt})
			}
			continue
		}
		i := s.r.Intn(len(s.pool))
		w := s.pool[i]
		if s.r.Intn(5) != 0 { // 1 in 5: delivered again later
			s.pool[i] = s.pool[len(s.pool)-1]
			s.pool = s.pool[:len(s.pool)-1]
		}
		s.deliver(w)
	}
	// Whatever was held back is stale by now.
	for _, ws := range s.held {
		for _, w := range ws {
			s.deliver(w)
		}
	}
}

func TestPropertyRandomDefinitions(t *testing.T) {
	t.Parallel()
	const definitions = 300
	for seed := range int64(definitions) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Parallel()
			src := genDefinition(rand.New(rand.NewSource(seed)))
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("definition:\n%s", src)
				}
			})
			def, err := workflow.Parse("gen.yaml", []byte(src))
			require.NoError(t, err, "the generator made an invalid definition")

			for run := range int64(3) {
				r := rand.New(rand.NewSource(seed*1000 + run))

				// (b) all tasks succeed: completes, exactly once.
				s := newSim(t, r, def, true)
				s.run()
				require.Equal(t, workflow.StatusCompleted, s.inst.Status, "all tasks succeeded (run %d)", run)
				require.Equal(t, 1, s.finished)
				for step, attempts := range s.emitted {
					require.Equal(t, map[int]bool{1: true}, attempts, "step %q retried although nothing failed", step)
				}

				// Failures, timeouts and retries: still terminal, once.
				s = newSim(t, r, def, false)
				s.run()
				require.True(t, s.inst.Status.Terminal(), "instance left %s with nothing in flight (run %d)", s.inst.Status, run)
				require.Equal(t, 1, s.finished)
				require.Empty(t, workflow.Outstanding(def, s.inst).Tasks)
			}
		})
	}
}

// The generator itself covers what it should.
func TestPropertyGeneratorCoverage(t *testing.T) {
	t.Parallel()
	kinds := map[string]int{}
	for seed := range int64(300) {
		src := genDefinition(rand.New(rand.NewSource(seed)))
		for _, k := range []string{"kind: parallel", "kind: switch", "on_failure:", "timeout:", "default:"} {
			if strings.Contains(src, k) {
				kinds[k]++
			}
		}
	}
	for _, k := range []string{"kind: parallel", "kind: switch", "on_failure:", "timeout:", "default:"} {
		require.Greater(t, kinds[k], 30, "too few generated definitions with %q", k)
	}
}
