package workflow

import (
	"fmt"
	"strconv"
	"time"
)

// Terminal reports whether a step has finished (completed or failed).
func (s StepStatus) Terminal() bool { return s == StepCompleted || s == StepFailed }

// RetryMsgID deduplicates the operator's retry number n of an instance.
func RetryMsgID(instance string, n int) string {
	return "retry/" + instance + "/" + strconv.Itoa(n)
}

// retry continues a failed or cancelled instance (EventRetry), with the
// same id: the steps it resumes get fresh attempts (attempt numbers go on
// from where they were, so task ids, output keys and result fences are
// new), and everything the instance recorded stays. Without ev.Step it
// resumes every step that failed without an on_failure step taking over
// and every task, sleep or wait step that was still running when the
// instance ended; with ev.Step it activates that step anew and the chain
// goes on from it. The instance deadline, if any, starts again.
//
// A retry is applied once: ev.Attempt must equal the instance's Retries
// (the count the operator saw); Retries then goes up by one.
func retry(def *Definition, inst *Instance, ev Event, now time.Time, data Data) (Decision, error) {
	why := retryRefused(inst)
	if why == "" && ev.Attempt != inst.Retries {
		why = fmt.Sprintf("retry %d was already applied (retries: %d)", ev.Attempt+1, inst.Retries)
	}
	if why != "" {
		return Decision{Instance: inst, Ignored: why}, nil
	}
	from, why := RetrySteps(def, inst, ev.Step)
	if why != "" {
		return Decision{Instance: inst, Ignored: why}, nil
	}
	t := &transition{def: def, inst: inst.Clone(), now: now, data: data, changed: true, paused: ev.Paused}
	t.inst.Status, t.inst.Error, t.inst.OutputRef, t.inst.Ended = StatusRunning, "", "", time.Time{}
	t.inst.Retries++
	if def.Deadline > 0 {
		t.setTimer(deadlineTimer, now.Add(def.Deadline.D()))
	}
	if def.Concurrency != nil {
		// The instance gave its slot back when it ended: it waits for
		// one again before it resumes (grant activates Resume).
		t.inst.Resume = from
		t.enterInstanceGate()
		return t.decision(inst)
	}
	for _, name := range from {
		t.activate(name)
	}
	return t.decision(inst)
}

// Retryable returns the steps a retry of inst resumes (from: that step;
// "": where it stopped), or why it cannot be retried: the checks the
// transition of a retry makes, so a client can refuse before asking.
func Retryable(def *Definition, inst *Instance, from string) ([]string, string) {
	if why := retryRefused(inst); why != "" {
		return nil, why
	}
	return RetrySteps(def, inst, from)
}

// retryRefused says why inst, as a whole, is not retried ("" if it may be).
func retryRefused(inst *Instance) string {
	switch {
	case inst.Status == StatusRunning:
		return "it is running"
	case inst.Status == StatusCompleted:
		return "it completed"
	case inst.Parent != nil:
		return fmt.Sprintf("it is a child of bulk step %s of %s: retry the parent", inst.Parent.Step, inst.Parent.ID)
	}
	return ""
}

// RetrySteps returns the steps a retry of inst resumes (see retry), in
// definition order, or why it cannot be retried from there.
func RetrySteps(def *Definition, inst *Instance, from string) ([]string, string) {
	if from != "" {
		s, ok := def.index[from]
		if !ok {
			return nil, fmt.Sprintf("workflow %s version %d has no step %q", def.Name, def.Version, from)
		}
		if st := inst.Steps[from]; s.Kind == KindBulk && st != nil {
			return nil, fmt.Sprintf("bulk step %q ran already; its children exist and are not started again", from)
		}
		return []string{from}, ""
	}
	var out []string
	for _, s := range def.Steps {
		st := inst.Steps[s.Name]
		if st == nil {
			continue
		}
		switch {
		case st.Status == StepFailed:
			if s.OnFailure != "" && inst.Steps[s.OnFailure] != nil {
				continue // its on_failure step took over
			}
			out = append(out, s.Name)
		case !st.Status.Terminal() && (s.Kind == KindTask || s.Kind == KindSleep || s.Kind == KindWait || s.Kind == KindWorkflow):
			out = append(out, s.Name)
		}
	}
	if len(out) == 0 {
		return nil, "no failed or interrupted step to continue from (name one with --from)"
	}
	return out, ""
}

// bulkRanBefore keeps the outcome of a bulk step that an operator's retry
// reached again: it is not dispatched twice.
func (t *transition) bulkRanBefore(s *Step, old *StepState) {
	t.inst.Steps[s.Name] = old
	if old.Status == StepCompleted {
		t.follow(s)
		return
	}
	t.failStep(s, old, old.Error)
}
