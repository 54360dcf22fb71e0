package workflow

import (
	"strconv"
	"time"
)

// Debounce (trigger.debounce, trigger.max_wait; docs/schedules.md):
// events of one event key that arrive less than Debounce after the one
// before them form one window; when the window has been quiet for
// Debounce (or MaxWait after its first event), one instance starts with
// the window's last event as input. The window is a record in the
// schedules bucket changed only by compare-and-swap; a one-shot message
// schedule (a timer) says when to look at it.

// DebounceState is the record of one event key's open window.
type DebounceState struct {
	// Key is the event key.
	Key string `json:"key"`
	// First is the trigger stream sequence of the window's first event:
	// it names the instance (DebounceEventKey).
	First uint64 `json:"first"`
	// FirstAt is when the first event arrived (MaxWait counts from it).
	FirstAt time.Time `json:"first_at"`
	// Last is the trigger stream sequence of the latest event: its
	// payload is the instance's input.
	Last uint64 `json:"last"`
	// Due is when the window closes.
	Due time.Time `json:"due"`
	// Closing is set when the window closed: the Last the instance
	// starts with. Events after it open the next window.
	Closing uint64 `json:"closing,omitempty"`
}

// DebounceEvent adds the event at trigger sequence seq, arrived at now,
// to the window st (nil: none open). changed is false when the event is
// already in it (a redelivery) or older than its last event.
func DebounceEvent(st *DebounceState, key string, seq uint64, now time.Time, debounce, maxWait time.Duration) (DebounceState, bool) {
	if st == nil {
		return DebounceState{Key: key, First: seq, FirstAt: now, Last: seq, Due: debounceDue(now, now, debounce, maxWait)}, true
	}
	next := *st
	if seq <= next.Last {
		return next, false
	}
	next.Last = seq
	if next.Closing == 0 {
		next.Due = debounceDue(next.FirstAt, now, debounce, maxWait)
	}
	return next, true
}

func debounceDue(first, now time.Time, debounce, maxWait time.Duration) time.Time {
	due := now.Add(debounce)
	if maxWait > 0 && first.Add(maxWait).Before(due) {
		due = first.Add(maxWait)
	}
	return due
}

// DebounceAfterStart is the record after the instance of a closed window
// started: nil (delete it) when no event came after the close, else the
// next window, opened now by the events that did.
func DebounceAfterStart(st DebounceState, now time.Time, debounce time.Duration) *DebounceState {
	if st.Closing == 0 || st.Last <= st.Closing {
		return nil
	}
	return &DebounceState{Key: st.Key, First: st.Last, FirstAt: now, Last: st.Last, Due: now.Add(debounce)}
}

// DebounceEventKey is the event key of the instance a debounce window
// starts: the key and the window's first trigger sequence, so each
// window starts one instance and two windows never share one.
func DebounceEventKey(key string, first uint64) string {
	return key + "~debounce-" + strconv.FormatUint(first, 10)
}
