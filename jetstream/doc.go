// Package jetstream is jetflow's adapter to NATS JetStream: the embedded
// server, the connection, idempotent provisioning of streams, buckets and
// consumers, the msgpack codec of instances and messages, user values as
// JSON (value.go), deterministic message ids, the KV-backed
// instance store with revision compare-and-swap, and the translation of NATS
// errors into the domain errors of package workflow.
//
// Nothing outside this package imports nats.go. Inside it, nats.go's
// jetstream package is always imported as natsjs.
//
// Every stream, subject, bucket and consumer name is in names.go.
package jetstream
