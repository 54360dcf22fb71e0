package workflow

import "fmt"

// MaxRuns is the most runs trigger.on_duplicate: rerun starts for one event
// key. Finding the latest run reads every run of the key, so the cap bounds
// what one trigger costs; a duplicate beyond it is refused with
// ErrTooManyRuns.
const MaxRuns = 1000

// RunChoice says which run of an event key a trigger goes to under
// trigger.on_duplicate: rerun.
type RunChoice struct {
	// Run is the run the trigger's start event is for, from 1; its
	// instance id is RunID(first, Run).
	Run int
	// New is true when that run does not exist yet: the start creates it
	// (unless a racing start creates it first, and this one becomes its
	// duplicate). When false the start is a duplicate of an existing run
	// and changes nothing.
	New bool
	// Why explains the choice, for logs.
	Why string
}

// ChooseRun decides which run of an event key a trigger message starts
// under trigger.on_duplicate: rerun. runs are the existing runs in order:
// runs[0] is run 1 (the instance with the event key's id), runs[i] is run
// i+1. Runs are contiguous because a run is only created after the one
// before it ended, and instances are never deleted. seq and digest
// identify the trigger message: its trigger stream sequence (0 when
// unknown) and the Digest of its payload.
//
// The rules, in order:
//
//  1. No run yet: run 1, new.
//  2. A run was started by this very message (same stream sequence and
//     payload digest): that run, not new. A redelivery after a missed ack,
//     a dispatcher crash or a replay of the stream never starts a second
//     run, however many runs came after it.
//  3. The latest run is still running: the latest, not new (the duplicate
//     is dropped as under on_duplicate: ignore).
//  4. The sequence is unknown: the latest, not new, because a redelivery
//     could not be recognised.
//  5. MaxRuns runs exist: ErrTooManyRuns.
//  6. Otherwise: the next run, new.
//
// Two different messages that both see the latest run ended choose the same
// next run; creating it is a KV Create, so one wins and the other is its
// duplicate: at most one new run per ended run.
func ChooseRun(runs []*Instance, seq uint64, digest string) (RunChoice, error) {
	if len(runs) == 0 {
		return RunChoice{Run: 1, New: true, Why: "first run"}, nil
	}
	if seq != 0 {
		for i, r := range runs {
			if r.TriggerSeq == seq && (digest == "" || r.InputDigest == "" || r.InputDigest == digest) {
				return RunChoice{Run: i + 1, Why: fmt.Sprintf("this trigger (stream sequence %d) already started run %d", seq, i+1)}, nil
			}
		}
	}
	latest := runs[len(runs)-1]
	n := len(runs)
	switch {
	case !latest.Status.Terminal():
		return RunChoice{Run: n, Why: fmt.Sprintf("run %d is still running", n)}, nil
	case seq == 0:
		return RunChoice{Run: n, Why: "the trigger's stream sequence is unknown, so a redelivery could not be told apart: no rerun"}, nil
	case n >= MaxRuns:
		return RunChoice{}, fmt.Errorf("%w: the event key has %d runs", ErrTooManyRuns, n)
	}
	return RunChoice{Run: n + 1, New: true, Why: fmt.Sprintf("run %d is %s", n, latest.Status)}, nil
}
