package workflow

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// The fields each step kind allows and requires, as a table: adding a
// kind is one entry in stepKindSpecs, and every "X is not allowed on a Y
// step" error comes from it.

// kindSpec is what one step kind accepts.
type kindSpec struct {
	// allowed lists the fields (by YAML name) a step of this kind may set,
	// besides name and kind. Any other field set is an error.
	allowed []string
	// required lists the allowed fields that must be set. Their validator
	// runs even when the field is empty and reports it missing.
	required []string
}

// stepKindSpecs is the table of step kinds. Its keys are stepKinds.
var stepKindSpecs = map[StepKind]kindSpec{
	KindTask: {
		allowed:  []string{"task", "input", "retry", "timeout", "once", "concurrency", "rate_limit", "next", "on_failure"},
		required: []string{"task"},
	},
	KindParallel: {
		allowed:  []string{"branches", "next"},
		required: []string{"branches"},
	},
	KindSwitch: {
		allowed:  []string{"cases", "default"},
		required: []string{"cases"},
	},
	KindBulk: {
		allowed:  []string{"workflow", "items", "max_in_flight", "max_items", "on_child_failure", "next", "on_failure"},
		required: []string{"workflow", "items"},
	},
	KindSleep: {
		allowed:  []string{"duration", "next"},
		required: []string{"duration"},
	},
	KindWait: {
		allowed:  []string{"signal", "timeout", "next", "on_failure"},
		required: []string{"signal"},
	},
	KindWorkflow: {
		allowed:  []string{"workflow", "input", "next", "on_failure"},
		required: []string{"workflow"},
	},
}

// stepField is one optional field of Step: whether a step sets it, and
// how its value is checked (nil: any value is valid). check reports
// through add; it runs when the field is set, or always when the kind
// requires the field.
type stepField struct {
	name  string
	set   func(s *Step) bool
	check func(d *Definition, s *Step, add func(error))
}

// stepFields lists every optional field of Step, in the order problems
// are reported.
var stepFields = []stepField{
	{name: "next", set: func(s *Step) bool { return s.Next != "" },
		check: func(d *Definition, s *Step, add func(error)) { add(d.ref(s.Name, "next", s.Next)) }},
	{name: "on_failure", set: func(s *Step) bool { return s.OnFailure != "" },
		check: func(d *Definition, s *Step, add func(error)) { add(d.ref(s.Name, "on_failure", s.OnFailure)) }},
	{name: "once", set: func(s *Step) bool { return s.Once }},
	{name: "duration", set: func(s *Step) bool { return s.Duration != 0 }, check: checkDuration},
	{name: "signal", set: func(s *Step) bool { return s.Signal != "" },
		check: func(d *Definition, s *Step, add func(error)) { add(d.nameErr(s.Name, "signal", s.Signal)) }},
	{name: "concurrency", set: func(s *Step) bool { return s.Concurrency != nil },
		check: func(d *Definition, s *Step, add func(error)) {
			add(d.validateConcurrency(s.Name, s.Concurrency, false))
		}},
	{name: "rate_limit", set: func(s *Step) bool { return s.RateLimit != nil },
		check: func(d *Definition, s *Step, add func(error)) { add(d.validateRateLimit(s.Name, s.RateLimit)) }},
	{name: "workflow", set: func(s *Step) bool { return s.Workflow != "" },
		check: func(d *Definition, s *Step, add func(error)) { add(d.nameErr(s.Name, "child workflow", s.Workflow)) }},
	{name: "items", set: func(s *Step) bool { return s.Items != "" }, check: checkItems},
	{name: "max_in_flight", set: func(s *Step) bool { return s.MaxInFlight != 0 }, check: checkMaxInFlight},
	{name: "max_items", set: func(s *Step) bool { return s.MaxItems != 0 }, check: checkMaxItems},
	{name: "on_child_failure", set: func(s *Step) bool { return s.OnChildFailure != "" }, check: checkOnChildFailure},
	{name: "task", set: func(s *Step) bool { return s.Task != "" },
		check: func(d *Definition, s *Step, add func(error)) { add(d.nameErr(s.Name, "task type", s.Task)) }},
	{name: "input", set: func(s *Step) bool { return s.Input != "" },
		check: func(d *Definition, s *Step, add func(error)) { add(d.compile(s.Name, "input", s.Input)) }},
	{name: "retry", set: func(s *Step) bool { return s.Retry != nil }, check: checkRetry},
	{name: "timeout", set: func(s *Step) bool { return s.Timeout != 0 }},
	{name: "branches", set: func(s *Step) bool { return len(s.Branches) > 0 }, check: checkBranches},
	{name: "cases", set: func(s *Step) bool { return len(s.Cases) > 0 }, check: checkCases},
	{name: "default", set: func(s *Step) bool { return s.Default != "" },
		check: func(d *Definition, s *Step, add func(error)) { add(d.ref(s.Name, "default", s.Default)) }},
}

// validateStep checks one step against its kind's entry in stepKindSpecs.
func (d *Definition) validateStep(s *Step) error {
	if s.Name == "" {
		return nil // already reported
	}
	spec, ok := stepKindSpecs[s.Kind]
	switch {
	case s.Kind == "":
		return d.errf(s.Name, "kind is missing (one of %s)", kindList())
	case !ok:
		return d.errf(s.Name, "unknown kind %q (one of %s)", s.Kind, kindList())
	}
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	for _, f := range stepFields {
		set := f.set(s)
		switch {
		case !slices.Contains(spec.allowed, f.name):
			if set {
				add(d.errf(s.Name, "%s is not allowed on a %s step", f.name, s.Kind))
			}
		case f.check != nil && (set || slices.Contains(spec.required, f.name)):
			f.check(d, s, add)
		}
	}
	return joinErrs(errs)
}

func kindList() string {
	names := make([]string, len(stepKinds))
	for i, k := range stepKinds {
		names[i] = string(k)
	}
	return strings.Join(names, ", ")
}

// nameErr reports an invalid name of a step field, or nil.
func (d *Definition) nameErr(step, what, name string) error {
	if err := ValidateName(what, name); err != nil {
		return d.errf(step, "%v", err)
	}
	return nil
}

func checkDuration(d *Definition, s *Step, add func(error)) {
	if s.Duration <= 0 {
		add(d.errf(s.Name, "a %s step needs a positive duration", s.Kind))
	}
}

func checkItems(d *Definition, s *Step, add func(error)) {
	if s.Items == "" {
		add(d.errf(s.Name, "a %s step needs items (an expression giving a list)", s.Kind))
		return
	}
	add(d.compile(s.Name, "items", s.Items))
}

func checkMaxInFlight(d *Definition, s *Step, add func(error)) {
	if s.MaxInFlight < 0 {
		add(d.errf(s.Name, "max_in_flight must not be negative, got %d", s.MaxInFlight))
	}
}

func checkMaxItems(d *Definition, s *Step, add func(error)) {
	if s.MaxItems < 0 || s.MaxItems > MaxItemsCap {
		add(d.errf(s.Name, "max_items must be between 0 (default %d) and %d, got %d", DefaultMaxItems, MaxItemsCap, s.MaxItems))
	}
}

func checkOnChildFailure(d *Definition, s *Step, add func(error)) {
	if !s.OnChildFailure.valid() {
		add(d.errf(s.Name, "on_child_failure must be %s or %s, got %q", FailFast, WaitAll, s.OnChildFailure))
	}
}

func checkRetry(d *Definition, s *Step, add func(error)) {
	r := s.Retry.withDefaults()
	if r.MaxAttempts < 1 || r.MaxAttempts > MaxAttemptsCap {
		add(d.errf(s.Name, "retry.max_attempts must be between 1 and %d, got %d", MaxAttemptsCap, s.Retry.MaxAttempts))
	}
	if !(r.BackoffCoefficient >= 1) || math.IsInf(r.BackoffCoefficient, 0) {
		add(d.errf(s.Name, "retry.backoff_coefficient must be at least 1, got %g", r.BackoffCoefficient))
	}
}

func checkBranches(d *Definition, s *Step, add func(error)) {
	if len(s.Branches) == 0 {
		add(d.errf(s.Name, "a %s step needs at least one branch", s.Kind))
	}
	seen := map[string]bool{}
	for i, b := range s.Branches {
		if b == "" {
			add(d.errf(s.Name, "branch %d is empty", i+1))
		}
		add(d.ref(s.Name, "branch", b))
		if seen[b] {
			add(d.errf(s.Name, "branch %q is listed twice", b))
		}
		seen[b] = true
	}
}

func checkCases(d *Definition, s *Step, add func(error)) {
	if len(s.Cases) == 0 {
		add(d.errf(s.Name, "a %s step needs at least one case", s.Kind))
	}
	for i, c := range s.Cases {
		if c.When == "" {
			add(d.errf(s.Name, "case %d has no condition (when)", i+1))
		} else {
			add(d.compile(s.Name, fmt.Sprintf("case %d condition", i+1), c.When))
		}
		if c.Next == "" {
			add(d.errf(s.Name, "case %d has no next step", i+1))
		}
		add(d.ref(s.Name, fmt.Sprintf("case %d next", i+1), c.Next))
	}
}
