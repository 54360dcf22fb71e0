// Package embedded runs a NATS server with JetStream inside the process:
// what the dispatcher binary starts when it is given no NATS URL, and
// what tests start (package jetflowtest uses it).
//
// It is the only package of jetflow that links nats-server (about 12 MB
// of a binary). Applications and workers use package jetflow and package
// worker, which do not import it; import it only in a binary or test
// that starts a server.
//
// Start takes an exclusive lock on the store directory (StoreLockFile),
// so two processes never run a server on the same store; it refuses to
// listen beyond loopback without authentication unless Config.Insecure.
// A client connects over Server.ClientURL, or in-process (no network) by
// passing the Server to nats.InProcessServer.
package embedded
