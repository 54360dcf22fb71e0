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
//
// The dispatcher reaches NATS only through the Backend interface, which
// *jetstream.Client implements; it reads and settles messages through
// jetstream.Delivery. Its tests run it against a real embedded server
// through a wrapper of that interface that injects faults (a commit that
// fails or whose answer is lost, a publish a crashed server forgot, an
// ack never sent), so its Config carries no test hooks.
//
// Run owns every goroutine it starts and waits for them. A background
// loop that fails once running (the definitions watch, the repair loop)
// is restarted with backoff and counted in jetflow_loop_restarts_total;
// every request runs under Run's context, bounded by PassTimeout or
// OpTimeout, and the drain is bounded by ShutdownTimeout.
package dispatcher
