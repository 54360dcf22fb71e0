package workflow

import (
	"bytes"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// StepKind is what a step does: the value of its kind field. A
// definition with any other value is rejected, naming the valid ones.
type StepKind string

// Step kinds.
const (
	KindTask     StepKind = "task"     // run a task on a worker
	KindParallel StepKind = "parallel" // start branches and join when all end
	KindSwitch   StepKind = "switch"   // route to the first case whose condition holds
	KindBulk     StepKind = "bulk"     // start one child instance per item and wait for all
	KindSleep    StepKind = "sleep"    // wait for a duration, durably
	KindWait     StepKind = "wait"     // wait for a named signal, optionally with a timeout
	KindWorkflow StepKind = "workflow" // start one child workflow and complete with its output
)

var stepKinds = []StepKind{KindTask, KindParallel, KindSwitch, KindBulk, KindSleep, KindWait, KindWorkflow}

// StepKinds lists every step kind, in documentation order.
func StepKinds() []StepKind { return slices.Clone(stepKinds) }

// Bulk limits and failure policies.
const (
	// DefaultMaxItems is a bulk step's item limit unless it sets max_items.
	DefaultMaxItems = 100_000
	// MaxItemsCap is the largest max_items accepted.
	MaxItemsCap = 1_000_000
	// BulkChunk is how many children one transition dispatches at most.
	BulkChunk = 1000

	// FailFast fails the bulk step at the first failed child.
	FailFast ChildFailurePolicy = "fail_fast"
	// WaitAll waits for every child and reports the counts. The default.
	WaitAll ChildFailurePolicy = "wait_all"
)

// ChildFailurePolicy is what a bulk step does when a child fails
// (on_child_failure): FailFast or WaitAll. Empty means WaitAll.
type ChildFailurePolicy string

func (p ChildFailurePolicy) valid() bool { return p == "" || p == FailFast || p == WaitAll }

// Limits on definitions.
const (
	MaxSteps       = 1000 // steps per definition
	MaxAttemptsCap = 100  // upper bound of RetryPolicy.MaxAttempts
)

// HeaderKeyPrefix marks a trigger key taken from a message header instead
// of the payload: "header:Nats-Msg-Id".
const HeaderKeyPrefix = "header:"

// Definition is a parsed and validated workflow definition. Fields carry
// yaml tags; JSON definitions are read with the same tags.
type Definition struct {
	// Name identifies the workflow; letters, digits, '-' and '_'.
	Name string `yaml:"name"`
	// Version is a positive integer; instances keep the version they started
	// with.
	Version int `yaml:"version"`
	// Description is free text.
	Description string `yaml:"description,omitempty"`
	// Trigger binds a NATS subject to this workflow. Optional: without it the
	// workflow is started explicitly (jetflow start / bulk steps).
	Trigger *Trigger `yaml:"trigger,omitempty"`
	// Start names the first step. Default: the first step listed.
	Start string `yaml:"start,omitempty"`
	// Output is an expression for the instance output. Default: the output
	// of the step that ended the workflow.
	Output string `yaml:"output,omitempty"`
	// Deadline bounds a whole instance: when it passes, the instance fails.
	// Default 0: none.
	Deadline Duration `yaml:"deadline,omitempty"`
	// Concurrency bounds the running instances of this workflow per key
	// value (flow.go). Default nil: no bound.
	Concurrency *Concurrency `yaml:"concurrency,omitempty"`
	// Schedules start instances at fire times (cron or interval), each
	// fire time once. Default: none. See Schedule and docs/schedules.md.
	Schedules []Schedule `yaml:"schedules,omitempty"`
	// Steps of the workflow.
	Steps []Step `yaml:"steps"`

	file     string
	index    map[string]*Step
	scopes   map[string]string // step -> owning parallel step ("" = root)
	compiled map[string]*compiled
}

// Trigger binds an event subject to a workflow.
type Trigger struct {
	// Subject is a NATS subject, wildcards allowed ("orders.created",
	// "orders.*.created"). Subjects under "jetflow." and "$" are reserved.
	Subject string `yaml:"subject"`
	// Key says where the event key comes from: a dotted path into the JSON
	// payload ("orderId", "order.id"), or "header:<Name>" for a message
	// header ("header:Nats-Msg-Id"). A payload field gives the key in
	// its canonical form (EventKey: a string as it is, an integer as its
	// digits; anything else is rejected). One event key starts at most
	// one instance, unless OnDuplicate is rerun.
	Key string `yaml:"key"`
	// OnDuplicate says what a trigger for an event key that already has an
	// instance does: DuplicateIgnore (default) drops it; DuplicateRerun
	// starts a new run "<id>-r<n>" when the latest run of the key has ended
	// (completed, failed or cancelled) and drops it while that run is still
	// running. See ChooseRun for the exact rules.
	OnDuplicate DuplicatePolicy `yaml:"on_duplicate,omitempty"`
	// Debounce merges events of one event key: an event arriving less
	// than Debounce after the one before it joins its window, and one
	// instance starts when the window has been quiet for Debounce, with
	// the window's last event as input. Default: none (every event key
	// starts its instance at once). Must be positive when set.
	Debounce *Duration `yaml:"debounce,omitempty"`
	// MaxWait bounds a debounce window: it closes MaxWait after its first
	// event even if events keep coming. Default: none. At least Debounce;
	// only with Debounce.
	MaxWait *Duration `yaml:"max_wait,omitempty"`
}

// Debounces reports the trigger's debounce window and bound (0, 0 when
// it does not debounce).
func (t *Trigger) Debounces() (debounce, maxWait time.Duration) {
	if t == nil || t.Debounce == nil {
		return 0, 0
	}
	if t.MaxWait != nil {
		maxWait = t.MaxWait.D()
	}
	return t.Debounce.D(), maxWait
}

// DuplicatePolicy is what a trigger for an event key that already has
// an instance does (trigger.on_duplicate): DuplicateIgnore or
// DuplicateRerun. Empty means DuplicateIgnore.
type DuplicatePolicy string

// Trigger duplicate policies (Trigger.OnDuplicate).
const (
	// DuplicateIgnore drops every trigger for an event key that already
	// has an instance. The default.
	DuplicateIgnore DuplicatePolicy = "ignore"
	// DuplicateRerun starts a new run of the event key when its latest run
	// has ended.
	DuplicateRerun DuplicatePolicy = "rerun"
)

// Reruns reports whether duplicate triggers of this workflow start new runs
// (trigger.on_duplicate: rerun).
func (d *Definition) Reruns() bool {
	return d.Trigger != nil && d.Trigger.OnDuplicate == DuplicateRerun
}

// Step is one node of the workflow graph.
type Step struct {
	// Name identifies the step within the workflow.
	Name string `yaml:"name"`
	// Kind is one of the StepKinds; it decides which other fields the
	// step may set.
	Kind StepKind `yaml:"kind"`
	// Task is the task type a worker handles (kind task).
	Task string `yaml:"task,omitempty"`
	// Input is an expression evaluated when the step starts; its value is
	// the task's input. Default: the instance input.
	Input string `yaml:"input,omitempty"`
	// Retry policy (kind task). Default: DefaultRetryPolicy.
	Retry *RetryPolicy `yaml:"retry,omitempty"`
	// Timeout bounds one attempt, start to close (kind task), or the wait
	// for the signal (kind wait: the step fails when it passes). Zero:
	// none.
	Timeout Duration `yaml:"timeout,omitempty"`
	// Once runs the handler at most once for this step (kind task), across
	// attempts and redeliveries: the worker claims the step's effect key
	// before calling the handler and records the outcome after it; a later
	// delivery reports the recorded outcome instead of running again. A
	// handler error is final (not retried). A claim left without an outcome
	// (the worker died mid-handler) fails the attempt with "it may or may
	// not have happened" and is never run again. Default false: at least
	// once, with Task.EffectKey for idempotent handlers.
	Once bool `yaml:"once,omitempty"`
	// Next is the step that follows (every kind but switch). Empty: this
	// step ends its chain.
	Next string `yaml:"next,omitempty"`
	// OnFailure is the step to run when this step fails for good (kinds
	// task, bulk, wait and workflow). Empty: the instance fails.
	OnFailure string `yaml:"on_failure,omitempty"`
	// Branches name the first step of each branch (kind parallel). Each
	// branch runs until its chain ends; the parallel step completes when all
	// branches have ended, then continues with Next.
	Branches []string `yaml:"branches,omitempty"`
	// Cases are tried in order (kind switch); the first whose condition is
	// true chooses the next step.
	Cases []Case `yaml:"cases,omitempty"`
	// Default is the next step when no case matches (kind switch). Empty:
	// the chain ends.
	Default string `yaml:"default,omitempty"`

	// Duration of a sleep step.
	Duration Duration `yaml:"duration,omitempty"`
	// Signal is the name a wait step waits for.
	Signal string `yaml:"signal,omitempty"`

	// Concurrency bounds the running attempts of this task step across
	// all instances, per key value (kind task). Default nil: no bound.
	Concurrency *Concurrency `yaml:"concurrency,omitempty"`
	// RateLimit bounds how often attempts of this task step start, per
	// key value (kind task). Default nil: no bound.
	RateLimit *RateLimit `yaml:"rate_limit,omitempty"`

	// Workflow is the child workflow a bulk step starts per item, or the
	// one child a workflow step starts (its latest version when the child
	// starts).
	Workflow string `yaml:"workflow,omitempty"`
	// Items is an expression giving the list of child inputs (kind bulk).
	Items string `yaml:"items,omitempty"`
	// MaxInFlight bounds the children running at once (kind bulk).
	// Default 0: no bound (children are still dispatched in chunks of
	// BulkChunk).
	MaxInFlight int `yaml:"max_in_flight,omitempty"`
	// MaxItems rejects a list longer than this (kind bulk). Default
	// DefaultMaxItems; at most MaxItemsCap.
	MaxItems int `yaml:"max_items,omitempty"`
	// OnChildFailure is fail_fast (the step fails at the first failed
	// child) or wait_all (default: wait for every child; the step completes
	// and its output reports the counts).
	OnChildFailure ChildFailurePolicy `yaml:"on_child_failure,omitempty"`
}

// Case is one branch of a switch.
type Case struct {
	When string `yaml:"when"`
	Next string `yaml:"next"`
}

// RetryPolicy controls how a failed task attempt is retried: attempt n+1
// starts InitialInterval * BackoffCoefficient^(n-1) after attempt n failed,
// capped at MaxInterval.
type RetryPolicy struct {
	// MaxAttempts counts the first attempt. Default 3; 1 disables retries.
	MaxAttempts int `yaml:"max_attempts,omitempty"`
	// InitialInterval is the delay before the second attempt. Default 1s.
	InitialInterval Duration `yaml:"initial_interval,omitempty"`
	// BackoffCoefficient multiplies the delay per attempt. Default 2.
	BackoffCoefficient float64 `yaml:"backoff_coefficient,omitempty"`
	// MaxInterval caps the delay. Default 1m.
	MaxInterval Duration `yaml:"max_interval,omitempty"`
}

// DefaultRetryPolicy applies to task steps without a retry section, and
// fills the zero fields of one that has it.
var DefaultRetryPolicy = RetryPolicy{
	MaxAttempts:        3,
	InitialInterval:    Duration(1e9),
	BackoffCoefficient: 2,
	MaxInterval:        Duration(60e9),
}

func (p *RetryPolicy) withDefaults() RetryPolicy {
	r := DefaultRetryPolicy
	if p == nil {
		return r
	}
	if p.MaxAttempts != 0 {
		r.MaxAttempts = p.MaxAttempts
	}
	if p.InitialInterval != 0 {
		r.InitialInterval = p.InitialInterval
	}
	if p.BackoffCoefficient != 0 {
		r.BackoffCoefficient = p.BackoffCoefficient
	}
	if p.MaxInterval != 0 {
		r.MaxInterval = p.MaxInterval
	}
	return r
}

// Parse reads a definition from YAML or JSON and validates it. file is used
// only in error messages. Unknown fields are errors, so a typo such as
// "nxt:" is reported instead of silently ignored.
func Parse(file string, src []byte) (*Definition, error) {
	if len(bytes.TrimSpace(src)) == 0 {
		return nil, &DefinitionError{File: file, Problem: "empty definition"}
	}
	dec := yaml.NewDecoder(bytes.NewReader(src))
	dec.KnownFields(true)
	var d Definition
	if err := dec.Decode(&d); err != nil {
		return nil, &DefinitionError{File: file, Problem: "cannot parse: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	d.file = file
	if err := d.validate(); err != nil {
		return nil, err
	}
	return &d, nil
}

// File is the name the definition was parsed from.
func (d *Definition) File() string { return d.file }

// Step returns the named step.
func (d *Definition) Step(name string) (*Step, bool) {
	s, ok := d.index[name]
	return s, ok
}

// TaskTypes lists the task types the definition's task steps use, each
// once, in step order.
func (d *Definition) TaskTypes() []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range d.Steps {
		if s.Kind == KindTask && !seen[s.Task] {
			seen[s.Task] = true
			out = append(out, s.Task)
		}
	}
	return out
}

// StartStep returns the name of the first step.
func (d *Definition) StartStep() string { return d.Start }

func (d *Definition) errf(step, format string, args ...any) error {
	return &DefinitionError{File: d.file, Step: step, Problem: fmt.Sprintf(format, args...)}
}

// validate checks everything a definition must satisfy and compiles its
// expressions. It reports every problem found, joined.
func (d *Definition) validate() error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := ValidateName("workflow name", d.Name); err != nil {
		add(d.errf("", "%v", err))
	}
	if d.Version < 1 {
		add(d.errf("", "version must be a positive integer, got %d", d.Version))
	}
	if d.Trigger != nil {
		add(d.validateTrigger())
	}
	for _, err := range d.validateSchedules() {
		add(err)
	}
	if len(d.Steps) == 0 {
		add(d.errf("", "no steps"))
		return joinErrs(errs)
	}
	if len(d.Steps) > MaxSteps {
		add(d.errf("", "%d steps; at most %d are allowed", len(d.Steps), MaxSteps))
		return joinErrs(errs)
	}
	errs = append(errs, d.validateSteps()...)
	if d.Output != "" {
		add(d.compile("", "output", d.Output))
	}
	if d.Concurrency != nil {
		add(d.validateConcurrency("", d.Concurrency, true))
	}
	if len(errs) > 0 {
		return joinErrs(errs)
	}
	if err := d.checkGraph(); err != nil {
		return err
	}
	return nil
}

// validateSteps indexes the steps by name, resolves the start step and
// checks each step.
func (d *Definition) validateSteps() []error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	d.index = make(map[string]*Step, len(d.Steps))
	for i := range d.Steps {
		s := &d.Steps[i]
		if err := ValidateName("step name", s.Name); err != nil {
			add(d.errf(s.Name, "%v", err))
			continue
		}
		if _, dup := d.index[s.Name]; dup {
			add(d.errf(s.Name, "defined twice"))
			continue
		}
		d.index[s.Name] = s
	}
	if d.Start == "" {
		d.Start = d.Steps[0].Name
	} else if _, ok := d.index[d.Start]; !ok {
		add(d.errf("", "start refers to unknown step %q", d.Start))
	}
	d.compiled = map[string]*compiled{}
	for i := range d.Steps {
		add(d.validateStep(&d.Steps[i]))
	}
	return errs
}

func (d *Definition) validateTrigger() error {
	t := d.Trigger
	if err := ValidateSubject(t.Subject, true); err != nil {
		return d.errf("", "trigger subject: %v", err)
	}
	if ReservedSubject(t.Subject) {
		return d.errf("", "trigger subject %q is reserved (jetflow.*, $*, _INBOX* and bare wildcards cannot be triggers)", t.Subject)
	}
	switch {
	case t.Key == "":
		return d.errf("", "trigger key is empty: name a payload field (\"orderId\") or a header (\"header:Nats-Msg-Id\")")
	case strings.HasPrefix(t.Key, HeaderKeyPrefix):
		if strings.TrimPrefix(t.Key, HeaderKeyPrefix) == "" {
			return d.errf("", "trigger key %q names no header", t.Key)
		}
	default:
		for _, part := range strings.Split(t.Key, ".") {
			if part == "" {
				return d.errf("", "trigger key %q has an empty path element", t.Key)
			}
		}
	}
	if t.Debounce != nil && *t.Debounce <= 0 {
		return d.errf("", "trigger debounce must be positive, such as 5s, got %s", t.Debounce)
	}
	if t.MaxWait != nil {
		switch {
		case t.Debounce == nil:
			return d.errf("", "trigger max_wait bounds a debounce window: set debounce too")
		case *t.MaxWait < *t.Debounce:
			return d.errf("", "trigger max_wait (%s) must be at least debounce (%s)", t.MaxWait, t.Debounce)
		}
	}
	if t.Debounce != nil && t.OnDuplicate == DuplicateRerun {
		return d.errf("", "trigger debounce and on_duplicate: rerun cannot be combined: a debounced key starts one instance per window already")
	}
	switch t.OnDuplicate {
	case "", DuplicateIgnore, DuplicateRerun:
	default:
		return d.errf("", "trigger on_duplicate must be %s (the default: drop duplicates) or %s (start a new run once the latest one ended), got %q", DuplicateIgnore, DuplicateRerun, t.OnDuplicate)
	}
	return nil
}

// ValidateSubject checks a NATS subject; wildcards are allowed only when
// wildcards is true.
func ValidateSubject(s string, wildcards bool) error {
	if s == "" {
		return fmt.Errorf("subject is empty")
	}
	if len(s) > 255 {
		return fmt.Errorf("subject %q is longer than 255 characters", s)
	}
	toks := strings.Split(s, ".")
	for i, tok := range toks {
		if tok == "" {
			return fmt.Errorf("subject %q has an empty token", s)
		}
		if strings.ContainsAny(tok, " \t\r\n") {
			return fmt.Errorf("subject %q contains white space", s)
		}
		if tok == "*" || tok == ">" {
			if !wildcards {
				return fmt.Errorf("subject %q must not contain wildcards", s)
			}
			if tok == ">" && i != len(toks)-1 {
				return fmt.Errorf("subject %q: '>' must be the last token", s)
			}
			continue
		}
		if strings.ContainsAny(tok, "*>") {
			return fmt.Errorf("subject %q: wildcards must be whole tokens", s)
		}
	}
	return nil
}

func (d *Definition) ref(step, field, target string) error {
	if target == "" {
		return nil
	}
	if _, ok := d.index[target]; !ok {
		return d.errf(step, "%s refers to unknown step %q", field, target)
	}
	if target == step {
		return d.errf(step, "%s refers to the step itself", field)
	}
	return nil
}

// edges lists the steps that can follow s, in a fixed order.
func (s *Step) edges() []string {
	var out []string
	out = append(out, s.Branches...)
	for _, c := range s.Cases {
		out = append(out, c.Next)
	}
	for _, n := range []string{s.Default, s.Next, s.OnFailure} {
		if n != "" {
			out = append(out, n)
		}
	}
	return out
}

// checkGraph rejects cycles, unreachable steps and steps shared between
// scopes, and records each step's scope.
func (d *Definition) checkGraph() error {
	if err := d.findCycle(); err != nil {
		return err
	}
	return d.assignScopes()
}

// findCycle reports the first cycle reachable from the start step, by a
// depth-first search with colours.
func (d *Definition) findCycle() error {
	const (
		white = iota
		grey
		black
	)
	colour := map[string]int{}
	var path []string
	var cycle error
	var visit func(string)
	visit = func(n string) {
		if cycle != nil {
			return
		}
		colour[n] = grey
		path = append(path, n)
		for _, m := range d.index[n].edges() {
			switch colour[m] {
			case grey:
				i := len(path) - 1
				for path[i] != m {
					i--
				}
				loop := append(append([]string{}, path[i:]...), m)
				cycle = d.errf(m, "cycle: %s", strings.Join(loop, " -> "))
				return
			case white:
				visit(m)
			}
		}
		path = path[:len(path)-1]
		colour[n] = black
	}
	visit(d.Start)
	return cycle
}

// assignScopes records each step's scope: the root chain or exactly one
// parallel step's branch. It reports steps reachable from two scopes and
// steps not reachable at all.
func (d *Definition) assignScopes() error {
	d.scopes = map[string]string{}
	var errs []error
	var assign func(step, scope string)
	assign = func(step, scope string) {
		if prev, ok := d.scopes[step]; ok {
			if prev != scope {
				errs = append(errs, d.errf(step, "reachable from two scopes (%s and %s); a step may belong to only one branch", scopeName(prev), scopeName(scope)))
			}
			return
		}
		d.scopes[step] = scope
		s := d.index[step]
		for i, b := range s.Branches {
			assign(b, branchScope(step, i))
		}
		for _, c := range s.Cases {
			assign(c.Next, scope)
		}
		for _, n := range []string{s.Default, s.Next, s.OnFailure} {
			if n != "" {
				assign(n, scope)
			}
		}
	}
	assign(d.Start, "")
	var unreachable []string
	for _, s := range d.Steps {
		if _, ok := d.scopes[s.Name]; !ok {
			unreachable = append(unreachable, s.Name)
		}
	}
	sort.Strings(unreachable)
	for _, u := range unreachable {
		errs = append(errs, d.errf(u, "unreachable from the start step %q", d.Start))
	}
	return joinErrs(errs)
}

// Scopes: "" is the main flow, "<parallel>#<i>" the i-th branch of a
// parallel step.
func branchScope(parallel string, i int) string { return parallel + "#" + strconv.Itoa(i) }

// scopeOwner is the parallel step that owns a scope ("" for the main flow).
func scopeOwner(scope string) string {
	if i := strings.LastIndexByte(scope, '#'); i >= 0 {
		return scope[:i]
	}
	return scope
}

func scopeName(scope string) string {
	if scope == "" {
		return "the main flow"
	}
	p, i, _ := strings.Cut(scope, "#")
	n, _ := strconv.Atoi(i)
	return fmt.Sprintf("branch %d of %s", n+1, p)
}

func joinErrs(errs []error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	return &multiError{errs: errs}
}

// multiError joins validation errors one per line and matches each of them.
type multiError struct{ errs []error }

func (m *multiError) Error() string {
	parts := make([]string, len(m.errs))
	for i, e := range m.errs {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "\n")
}

func (m *multiError) Unwrap() []error { return m.errs }
