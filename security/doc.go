// Package security generates what a secured jetflow deployment needs
// from NATS: each role's least-privilege permission block (For), a NATS
// server configuration with one nkey user per role and their seed files
// (Init), and with TLS a certificate authority with server and client
// certificates (NewCA).
//
// The roles are Admin (provisions; every permission in the account),
// Dispatcher, Worker (optionally limited to some task types), Producer
// (publishes on trigger subjects only) and Operator (the CLI's reads,
// plus start, cancel and signal). Each role takes replies under its own
// inbox prefix (Role.InboxPrefix), so no role can read another's.
//
// The permissions name jetflow's streams, consumers, buckets and
// subjects (jetstream/names.go) one JetStream API verb at a time; a test
// runs a workflow with the generated users and checks that every
// forbidden operation is denied. docs/security.md explains the model.
package security
