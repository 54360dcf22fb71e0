package jetstream

import (
	"context"
	"testing"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/embedded"
	"github.com/jetflow/jetflow/workflow"
)

func startTestClient(t *testing.T) *Client {
	t.Helper()
	srv, err := embedded.Start(embedded.Config{StoreDir: t.TempDir(), DontListen: true})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	c, err := Connect(context.Background(), Config{Server: srv})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// TestBucketsAreCreatedWithoutDirectGets: every bucket's stream has direct
// gets off from the moment it exists (a client binds once and keeps the
// read path the stream allowed then), a bucket made by an older version
// with direct gets is switched, and provisioning again changes nothing.
func TestBucketsAreCreatedWithoutDirectGets(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := startTestClient(t)
	// An older deployment: the instance bucket made by CreateKeyValue.
	_, err := c.js.CreateKeyValue(ctx, natsjs.KeyValueConfig{Bucket: BucketInstances, History: 1})
	require.NoError(t, err)
	require.NoError(t, c.Provision(ctx))
	for _, b := range []string{BucketInstances, BucketData, BucketDefinitions, BucketEffects} {
		st, err := c.js.Stream(ctx, "KV_"+b)
		require.NoError(t, err)
		require.False(t, st.CachedInfo().Config.AllowDirect, "bucket %s allows direct gets", b)
		kv, err := c.js.KeyValue(ctx, b)
		require.NoError(t, err, "bucket %s must still bind as a KV bucket", b)
		_, err = kv.Put(ctx, "k", []byte("v"))
		require.NoError(t, err)
		e, err := kv.Get(ctx, "k")
		require.NoError(t, err)
		require.Equal(t, "v", string(e.Value()))
	}
}

// TestProvisionSkipsStreamsThatAlreadyMatch: what the server stores
// matches what Provision asks for, so a second Provision (another
// dispatcher replica) sends no update: on a cluster, racing updates of one
// stream wait out API timeouts.
func TestProvisionSkipsStreamsThatAlreadyMatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := startTestClient(t)
	require.NoError(t, c.Provision(ctx))
	for _, name := range []string{StreamEvents, StreamTasks, StreamDLQ, StreamTriggers, "KV_" + BucketInstances, "KV_" + BucketData, "KV_" + BucketDefinitions, "KV_" + BucketEffects} {
		if name == StreamTriggers {
			continue // EnsureTriggerSubjects has its own check
		}
		st, err := c.js.Stream(ctx, name)
		require.NoError(t, err)
		require.True(t, sameStream(st.CachedInfo().Config, provisioned(t, c, name)), "stream %s differs from what Provision asks for:\n%+v", name, st.CachedInfo().Config)
	}
	for _, s := range []string{StreamTriggers, StreamEvents} {
		cons, err := c.js.Consumer(ctx, s, ConsumerDispatcher)
		require.NoError(t, err)
		cfg := cons.CachedInfo().Config
		require.Equal(t, c.cfg.DispatcherAckWait, cfg.AckWait)
	}
	require.NoError(t, c.Provision(ctx), "a second Provision is a no-op")
}

// provisioned returns the config Provision asks for, for one stream.
func provisioned(t *testing.T, c *Client, name string) natsjs.StreamConfig {
	t.Helper()
	for _, sc := range c.streamConfigs() {
		if sc.Name == name {
			return sc
		}
	}
	t.Fatalf("Provision does not make %s", name)
	return natsjs.StreamConfig{}
}

// TestReadsSurviveDirectGetsSwitchedOff: a worker that bound the buckets
// while they allowed direct gets (a deployment made by an older jetflow,
// or CreateKeyValue) keeps asking for direct gets after a dispatcher
// switched them off, and NATS answers those with "no responders". The
// fleet's workers hung on that forever. Reads must rebind and succeed.
func TestReadsSurviveDirectGetsSwitchedOff(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv, err := embedded.Start(embedded.Config{StoreDir: t.TempDir(), DontListen: true})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	connect := func() *Client {
		c, err := Connect(ctx, Config{Server: srv})
		require.NoError(t, err)
		t.Cleanup(c.Close)
		return c
	}
	disp, work := connect(), connect()
	for _, b := range []string{BucketInstances, BucketData, BucketDefinitions} {
		_, err := disp.js.CreateKeyValue(ctx, natsjs.KeyValueConfig{Bucket: b, History: 1})
		require.NoError(t, err)
	}
	require.NoError(t, work.Bind(ctx)) // binds with direct gets
	require.NoError(t, disp.Provision(ctx))
	require.NoError(t, disp.PutData(ctx, "some.key", "value"))
	raw, err := work.DataRaw(ctx, "some.key")
	require.NoError(t, err)
	v, err := DecodeValue(raw)
	require.NoError(t, err)
	require.Equal(t, "value", v)
	_, _, err = work.GetInstance(ctx, "nope")
	require.ErrorIs(t, err, workflow.ErrNotFound)
}

func TestInstanceRetentionMustCoverTriggerRetention(t *testing.T) {
	t.Parallel()
	srv := &embedded.Server{}
	for _, tc := range []struct {
		retention time.Duration
		ok        bool
	}{
		{0, true}, {48 * time.Hour, true}, {24 * time.Hour, true},
		{time.Hour, false}, {-time.Second, false},
	} {
		err := Config{Server: srv, InstanceRetention: tc.retention}.WithDefaults().Validate()
		if tc.ok {
			require.NoError(t, err, "retention %s", tc.retention)
		} else {
			require.Error(t, err, "retention %s", tc.retention)
		}
	}
}

// TestPullsWaitingCountsReadyWorkers: the bench starts its clock once
// workers pull; PullsWaiting is 0 before the task consumer exists and
// while nobody pulls, and counts each worker's waiting pull.
func TestPullsWaitingCountsReadyWorkers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := startTestClient(t)
	require.NoError(t, c.Provision(ctx))
	n, err := c.PullsWaiting(ctx, StreamTasks, WorkerConsumer("noop"))
	require.NoError(t, err)
	require.Zero(t, n, "no consumer yet")
	tc, err := c.EnsureTaskConsumer(ctx, "noop")
	require.NoError(t, err)
	n, err = c.PullsWaiting(ctx, StreamTasks, WorkerConsumer("noop"))
	require.NoError(t, err)
	require.Zero(t, n, "a consumer nobody pulls from")
	// A worker pulls once it asks for its first task.
	wctx, stop := context.WithCancel(ctx)
	t.Cleanup(stop)
	for i := 0; i < 2; i++ {
		go func() {
			for wctx.Err() == nil { // a pull expires after 5s: pull again
				b, err := tc.Fetch(wctx, 10)
				if err != nil {
					return
				}
				for range b.Messages() {
				}
			}
		}()
	}
	require.Eventually(t, func() bool {
		n, err := c.PullsWaiting(ctx, StreamTasks, WorkerConsumer("noop"))
		return err == nil && n >= 2
	}, 10*time.Second, 20*time.Millisecond, "two pulling workers")
}

// TestNoProvisionNamesWhatIsMissing: a client that may not provision
// changes nothing and says which asset is missing and which command
// makes it; once provisioned, it binds.
func TestNoProvisionNamesWhatIsMissing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv, err := embedded.Start(embedded.Config{StoreDir: t.TempDir(), DontListen: true})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	var logs syncBuffer
	bindOnly, err := Connect(ctx, Config{Server: srv, NoProvision: true, DLQRetention: time.Hour, Logger: zerolog.New(&logs)})
	require.NoError(t, err)
	t.Cleanup(bindOnly.Close)
	admin, err := Connect(ctx, Config{Server: srv})
	require.NoError(t, err)
	t.Cleanup(admin.Close)

	err = bindOnly.Provision(ctx)
	var missing *MissingError
	require.ErrorAs(t, err, &missing)
	require.ErrorIs(t, err, ErrNotProvisioned)
	require.Equal(t, "stream "+StreamEvents, missing.What)
	require.Contains(t, err.Error(), "jetflow provision")
	_, err = admin.js.Stream(ctx, StreamEvents)
	require.ErrorIs(t, err, natsjs.ErrStreamNotFound, "a bind-only client created a stream")

	require.NoError(t, admin.Provision(ctx))
	require.NoError(t, bindOnly.Provision(ctx))
	require.Contains(t, logs.String(), StreamDLQ, "the DLQ's retention differs from this client's and is left as it is, with a warning")
	_, err = bindOnly.DeadLetters(ctx, 1)
	require.NoError(t, err)

	_, err = bindOnly.EnsureTaskConsumer(ctx, "resize")
	require.ErrorAs(t, err, &missing)
	require.Equal(t, "consumer "+WorkerConsumer("resize")+" on stream "+StreamTasks, missing.What)
	require.Contains(t, missing.Fix, "--task-types resize")
	_, err = admin.js.Consumer(ctx, StreamTasks, WorkerConsumer("resize"))
	require.ErrorIs(t, err, natsjs.ErrConsumerNotFound)
	_, err = admin.EnsureTaskConsumer(ctx, "resize")
	require.NoError(t, err)
	_, err = bindOnly.EnsureTaskConsumer(ctx, "resize")
	require.NoError(t, err)

	err = bindOnly.EnsureTriggerSubjects(ctx, "orders.created")
	require.ErrorAs(t, err, &missing)
	require.Contains(t, missing.What, "orders.created")
	st, err := admin.js.Stream(ctx, StreamTriggers)
	require.NoError(t, err)
	require.Equal(t, []string{StartSubjects}, st.CachedInfo().Config.Subjects)
	require.NoError(t, admin.EnsureTriggerSubjects(ctx, "orders.created"))
	require.NoError(t, bindOnly.EnsureTriggerSubjects(ctx, "orders.created"))
}
