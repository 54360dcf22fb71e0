// Package jetstream is jetflow's adapter to NATS JetStream, for jetflow's
// own use: applications use package jetflow (the client) and package
// worker, which wrap it; its API changes without notice. It holds the
// connection, idempotent provisioning of streams, buckets and
// consumers, the msgpack codec of instances and messages, user values as
// JSON (value.go), deterministic message ids, the KV-backed
// instance store with revision compare-and-swap, and the translation of NATS
// errors into the domain errors of package workflow.
//
// The embedded server is in package embedded, so that programs which only
// connect (workers, applications) do not link nats-server.
//
// Apart from the client constructors (jetflow.New takes a *nats.Conn),
// nothing outside this package imports nats.go. Inside it, nats.go's
// jetstream package is always imported as natsjs.
//
// Every stream, subject, bucket and consumer name is in names.go.
package jetstream
