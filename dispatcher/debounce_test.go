package dispatcher_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

func instancesOf(t *testing.T, c *jetstream.Client, wf string) []*workflow.Instance {
	t.Helper()
	ids, err := c.ListInstanceIDs(context.Background())
	require.NoError(t, err)
	var out []*workflow.Instance
	for _, id := range ids {
		if in, _, err := c.GetInstance(context.Background(), id); err == nil && in.Workflow == wf {
			out = append(out, in)
		}
	}
	return out
}

// TestDebounceStartsOneInstanceWithTheLastPayload: 20 events for one key
// within 2s, with debounce 1s and two dispatchers, start one instance,
// after the quiet period, with the last event's payload; another key's
// event starts its own; a later event of the first key, after the
// window closed, starts a second instance under a new id.
func TestDebounceStartsOneInstanceWithTheLastPayload(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(`
name: deb
version: 1
trigger: {subject: deb.events, key: k, debounce: 1s}
steps:
  - {name: z, kind: sleep, duration: 1s}
`)
	e.Dispatcher(e.NewClient(), dispatcher.Config{})
	e.Dispatcher(e.NewClient(), dispatcher.Config{})
	ctx := context.Background()
	publish := func(k string, n int) {
		_, err := e.Client.Publish(ctx, "deb.events", fmt.Appendf(nil, `{"k": %q, "n": %d}`, k, n), nil)
		require.NoError(t, err)
	}
	var lastSent time.Time
	for n := range 20 {
		publish("a", n)
		lastSent = time.Now()
		time.Sleep(90 * time.Millisecond) // the producer's pace: 20 events in under 2s
	}
	publish("b", 100)
	var insts []*workflow.Instance
	jftest.Eventually(t, 20*time.Second, func() bool {
		insts = instancesOf(t, e.Client, "deb")
		return len(insts) >= 2
	}, "debounced instances did not start")
	// The windows are resolved (records deleted) once both started: no
	// other instance can come from these events.
	for _, k := range []string{"a", "b"} {
		jftest.Eventually(t, 20*time.Second, func() bool {
			w, _, err := e.Client.DebounceWindow(ctx, "deb", jetstream.DebounceID(k))
			return err == nil && w == nil
		}, "window of %s not resolved", k)
	}
	insts = instancesOf(t, e.Client, "deb")
	require.Len(t, insts, 2, "one instance per key")
	byKey := map[string]*workflow.Instance{}
	for _, in := range insts {
		k, _, _ := strings.Cut(in.EventKey, "~debounce-")
		byKey[k] = in
		require.Equal(t, workflow.InstanceID("deb", in.EventKey), in.ID)
	}
	a := byKey["a"]
	require.NotNil(t, a, "%v", insts)
	require.False(t, a.Created.Before(lastSent.Add(time.Second)), "instance created %s, before the quiet period after the last event (%s) ended", a.Created, lastSent)
	in, err := e.Client.LoadData(ctx, a.InputRef)
	require.NoError(t, err)
	require.Equal(t, map[string]any{"k": "a", "n": int64(19)}, in, "not the last payload")
	b, err := e.Client.LoadData(ctx, byKey["b"].InputRef)
	require.NoError(t, err)
	require.Equal(t, map[string]any{"k": "b", "n": int64(100)}, b)

	// A new window of key a starts a second instance.
	publish("a", 200)
	jftest.Eventually(t, 20*time.Second, func() bool { return len(instancesOf(t, e.Client, "deb")) == 3 }, "second window of a did not start")
}

// TestDebounceMaxWait: events that never pause are started at most
// max_wait after the first event of their window.
func TestDebounceMaxWait(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(`
name: busy
version: 1
trigger: {subject: busy.events, key: k, debounce: 1s, max_wait: 2s}
steps:
  - {name: z, kind: sleep, duration: 1s}
`)
	e.Dispatcher(nil, dispatcher.Config{})
	ctx := context.Background()
	first := time.Now()
	for n := 0; len(instancesOf(t, e.Client, "busy")) == 0; n++ {
		require.Less(t, time.Since(first), 20*time.Second, "no instance while events kept coming")
		_, err := e.Client.Publish(ctx, "busy.events", fmt.Appendf(nil, `{"k": "x", "n": %d}`, n), nil)
		require.NoError(t, err)
		time.Sleep(300 * time.Millisecond) // the producer never pauses for the debounce period
	}
	insts := instancesOf(t, e.Client, "busy")
	require.Len(t, insts, 1)
	require.False(t, insts[0].Created.Before(first.Add(2*time.Second)), "started before max_wait")
}
