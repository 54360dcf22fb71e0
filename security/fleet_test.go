//go:build compose

package security_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/security"
)

// TestFleetDenials runs against the secured compose fleet
// (scripts/compose-smoke.sh runs it with JETFLOW_FLEET_SECRETS=deploy/secrets
// and JETFLOW_FLEET_URL=tls://127.0.0.1:4222): each role's forbidden
// operations are refused by the cluster with a permissions violation,
// and a client without a certificate of the fleet's CA cannot connect.
// Run it only against a throwaway fleet: an operation that is wrongly
// allowed takes effect (a stream deleted, the DLQ purged).
func TestFleetDenials(t *testing.T) {
	dir, url := os.Getenv("JETFLOW_FLEET_SECRETS"), os.Getenv("JETFLOW_FLEET_URL")
	if dir == "" || url == "" {
		t.Skip("JETFLOW_FLEET_SECRETS and JETFLOW_FLEET_URL name the fleet's secrets and a node")
	}
	file := func(name string) string { return filepath.Join(dir, name) }
	connect := func(t *testing.T, role security.Role) (*nats.Conn, <-chan error) {
		t.Helper()
		ch := make(chan error, 64)
		seed, err := nats.NkeyOptionFromSeed(file(security.SeedFile(role)))
		require.NoError(t, err)
		nc, err := nats.Connect(url, seed, nats.CustomInboxPrefix(role.InboxPrefix()),
			nats.RootCAs(file(security.CAFile)), nats.ClientCert(file(security.CertFile(role)), file(security.KeyFile(role))),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				select {
				case ch <- err:
				default:
				}
			}))
		require.NoError(t, err, "connect as %s", role)
		t.Cleanup(nc.Close)
		return nc, ch
	}

	type op struct {
		name, subject, body string
		sub                 bool // a subscription, not a publish
	}
	common := []op{
		{name: "creates a stream", subject: "$JS.API.STREAM.CREATE.EVIL", body: `{"name":"EVIL","subjects":["evil.>"]}`},
		{name: "deletes the task stream", subject: "$JS.API.STREAM.DELETE." + jetstream.StreamTasks},
		{name: "deletes the DLQ", subject: "$JS.API.STREAM.DELETE." + jetstream.StreamDLQ},
		{name: "purges the DLQ", subject: "$JS.API.STREAM.PURGE." + jetstream.StreamDLQ},
		{name: "puts a definition", subject: "$KV." + jetstream.BucketDefinitions + ".evil.1", body: "name: evil"},
		{name: "creates a consumer on the task stream", subject: "$JS.API.CONSUMER.CREATE." + jetstream.StreamTasks + ".thief." + jetstream.TaskSubjects,
			body: `{"stream_name":"JETFLOW_TASKS","config":{"durable_name":"thief","filter_subject":"jetflow.task.>","ack_policy":"explicit"}}`},
		{name: "sniffs jetflow traffic", subject: "jetflow.>", sub: true},
	}
	forbidden := map[security.Role][]op{
		security.Dispatcher: common,
		security.Worker: append([]op{
			{name: "writes an instance", subject: "$KV." + jetstream.BucketInstances + ".probe", body: "x"},
			{name: "writes an input", subject: "$KV." + jetstream.BucketData + ".probe.in", body: "x"},
			{name: "writes an effect record", subject: "$KV." + jetstream.BucketEffects + ".probe/charge", body: "x"},
			{name: "publishes a trigger", subject: "orders.created", body: `{"orderId":"x"}`},
			{name: "publishes a task", subject: jetstream.TaskSubject("echo"), body: "x"},
			{name: "cancels an instance", subject: "jetflow.event.probe.cancel", body: "x"},
		}, common...),
		security.Producer: append([]op{
			{name: "publishes a result", subject: "jetflow.event.probe.result", body: "x"},
			{name: "reads KV", subject: "$JS.API.STREAM.MSG.GET.KV_" + jetstream.BucketData, body: `{"last_by_subj":"$KV.jetflow_data.probe.in"}`},
			{name: "publishes a task", subject: jetstream.TaskSubject("echo"), body: "x"},
		}, common...),
		security.Operator: append([]op{
			{name: "publishes a result", subject: "jetflow.event.probe.result", body: "x"},
			{name: "writes an instance", subject: "$KV." + jetstream.BucketInstances + ".probe", body: "x"},
			{name: "publishes a task", subject: jetstream.TaskSubject("echo"), body: "x"},
		}, common...),
	}
	for _, role := range []security.Role{security.Dispatcher, security.Worker, security.Producer, security.Operator} {
		for _, o := range forbidden[role] {
			t.Run(string(role)+" "+o.name, func(t *testing.T) {
				nc, errs := connect(t, role)
				if o.sub {
					_, err := nc.SubscribeSync(o.subject)
					require.NoError(t, err)
				} else {
					require.NoError(t, nc.PublishRequest(o.subject, nc.NewRespInbox(), []byte(o.body)))
				}
				requireRawDenied(t, errs, o.subject)
			})
		}
	}

	t.Run("mTLS", func(t *testing.T) {
		seed, err := nats.NkeyOptionFromSeed(file(security.SeedFile(security.Operator)))
		require.NoError(t, err)
		_, err = nats.Connect(url, seed, nats.RootCAs(file(security.CAFile)), nats.Timeout(5*time.Second))
		require.Error(t, err, "a client without a certificate connected")
		_, err = nats.Connect(strings.Replace(url, "tls://", "nats://", 1), seed, nats.Timeout(5*time.Second))
		require.Error(t, err, "a client without TLS connected")
		nc, _ := connect(t, security.Operator)
		require.True(t, nc.IsConnected())
	})
}
