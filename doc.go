// Package jetflow is the client for applications: start workflow
// instances, publish the events that trigger them, send signals, cancel,
// read instances and wait for their results. Workers that run the steps
// use package worker on the same Client; package jetflowtest helps test
// both.
//
// A Client runs on your NATS connection (New), or dials one (Connect):
//
//	nc, _ := nats.Connect(nats.DefaultURL)
//	client, _ := jetflow.New(nc)
//	id, _ := client.Start(ctx, "order", "o-1", Order{Amount: 1250, ID: "o-1"})
//	var receipt Receipt
//	_, err := client.Wait(ctx, id, &receipt)
//
// The client needs jetflow's streams and buckets, which a dispatcher (or
// `jetflow provision`) creates; it binds to them on first use and fails
// with ErrNotProvisioned while there are none.
//
// # Values have JSON semantics
//
// Inputs, event payloads and signal payloads are encoded as
// encoding/json.Marshal would (json tags, omitempty, json.Marshaler), and
// outputs are decoded as encoding/json.Unmarshal would (json tags,
// case-insensitive names, json.Number, json.Unmarshaler). A workflow's
// expressions read fields by their JSON names. A value JSON cannot hold
// (NaN, a channel) fails with ErrMalformed before anything is sent.
//
// # Instance ids
//
// An instance's id depends only on its workflow and event key
// (workflow.InstanceID): starting the same key twice starts one instance,
// and the caller knows the id without asking.
//
// The adapter behind the client (package jetflow/jetstream) and the
// embedded server (package jetflow/embedded) are not needed to use it: a
// program that imports jetflow and worker does not link nats-server.
package jetflow
