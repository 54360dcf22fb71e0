// Package workflow is jetflow's pure domain: workflow definitions (parsing
// and validation), instance state, and the transition function that moves an
// instance forward.
//
// Nothing in this package talks to NATS, encodes messages, reads the clock or
// starts goroutines. The dispatcher reads an instance, calls [Apply] with the
// event and the current time, writes the returned instance with a revision
// compare-and-swap, and only then carries out the returned [Decision]: data
// writes, task publications and timers. Because [Apply] is deterministic, the
// same event applied to the same instance always yields the same decision, so
// a redelivered event is harmless and recorded histories can be replayed.
//
// Instance states only move forward:
//
//	running ──▶ completed
//	   │  └───▶ failed
//	   └──────▶ cancelled
//
// Step states:
//
//	(absent) ──activate──▶ running ──ok──────────────▶ completed
//	                         │  ▲
//	                  fail,  │  │ retry timer fires
//	             retries left▼  │
//	                        waiting
//	                         │
//	          no retries left└──────────────────────▶ failed
//
// A step is activated at most once per instance: definitions are acyclic and
// every step belongs to exactly one scope (the root chain or one branch of a
// parallel step), so attempt numbers and data keys derived from
// (instance, step, attempt) never collide.
package workflow
