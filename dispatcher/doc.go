// Package dispatcher is jetflow's dispatcher runtime: it consumes trigger
// and event messages and drives instances with the transition function of
// package workflow.
//
// Every change to an instance, whatever caused it, takes the same path:
//
//	read (cache or KV) -> workflow.Apply -> write data -> CAS -> publish tasks and timers -> ack
//
// A lost CAS re-reads and applies again; it never drops the event. An
// event that cannot be processed right now is NAKed with a delay; one that
// can never be processed (malformed, unknown workflow or instance,
// oversize) is recorded in the dead-letter stream with the reason and
// terminated. Events of one instance are routed to one shard goroutine, so
// a dispatcher never races itself, and a shard applies every queued event
// of an instance in one CAS. Several dispatchers may run at once: they race
// only through CAS, which is safe.
package dispatcher
