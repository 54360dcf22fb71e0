package tasks_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/tasks"
	"github.com/jetflow/jetflow/worker"
	"github.com/jetflow/jetflow/workflow"
)

func TestAllowlist(t *testing.T) {
	t.Parallel()
	a, err := tasks.ParseAllowlist([]string{"api.example.com", "*.corp.example", "10.1.0.0/16", "192.0.2.7", "2001:db8::1"})
	require.NoError(t, err)
	for host, want := range map[string]bool{
		"localhost":                true, // loopback always
		"127.0.0.1":                true,
		"127.9.9.9":                true,
		"::1":                      true,
		"[::1]":                    true,
		"api.example.com":          true,
		"API.Example.COM.":         true,
		"x.api.example.com":        false,
		"example.com":              false,
		"svc.corp.example":         true,
		"a.b.corp.example":         true,
		"corp.example":             false,
		"evilcorp.example":         false,
		"10.1.255.3":               true,
		"10.2.0.1":                 false,
		"192.0.2.7":                true,
		"192.0.2.8":                false,
		"2001:db8::1":              true,
		"::ffff:10.1.0.9":          true,
		"169.254.169.254":          false, // cloud metadata
		"metadata.google.internal": false,
		"":                         false,
	} {
		require.Equal(t, want, a.Allows(host), host)
	}
	def, err := tasks.ParseAllowlist(nil)
	require.NoError(t, err)
	require.True(t, def.Allows("127.0.0.1"))
	require.False(t, def.Allows("10.0.0.1"), "by default nothing outside loopback")
	require.False(t, def.Allows("example.com"))
	all, err := tasks.ParseAllowlist([]string{"*"})
	require.NoError(t, err)
	require.True(t, all.Allows("example.com"))

	for _, bad := range []string{"10.0.0.0/33", "*.", "*.a*", "a b", "http://x", "host:80", "*x.com"} {
		_, err := tasks.ParseAllowlist([]string{bad})
		require.Error(t, err, bad)
	}
}

const fetchDef = `
name: fetch
version: 1
steps:
  - {name: get, kind: task, task: http, input: '{"url": input.url}', retry: {max_attempts: 3, initial_interval: 100ms}}
`

// fetch runs the fetch workflow for url through a dispatcher and a worker
// with the built-in task types and the given allowlist; it returns the
// finished instance.
func fetch(t *testing.T, allow []string, urls ...string) []*workflow.Instance {
	t.Helper()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(fetchDef)
	e.Dispatcher(nil, dispatcher.Config{})
	w, err := worker.New(jftest.App(e.Client), worker.Config{Logger: e.Log})
	require.NoError(t, err)
	require.NoError(t, tasks.RegisterWith(w, tasks.Options{HTTPAllow: allow}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	var out []*workflow.Instance
	for i, url := range urls {
		key := fmt.Sprintf("f%d", i)
		require.NoError(t, e.Client.PublishStart(ctx, jetstream.Start{Workflow: "fetch", EventKey: key, Payload: []byte(fmt.Sprintf(`{"url":%q}`, url))}))
		out = append(out, e.WaitTerminal(workflow.InstanceID("fetch", key), 30*time.Second))
	}
	return out
}

// TestHTTPTaskCallsOnlyAllowedHosts: by default the http task calls
// loopback and nothing else; a refused host (also one reached through a
// redirect from an allowed one) fails the step at once, permanently (one
// attempt of three), before any connection or DNS lookup.
func TestHTTPTaskCallsOnlyAllowedHosts(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "http://10.99.0.1:8080/steal", http.StatusFound)
			return
		}
		_, _ = w.Write([]byte("hello"))
	}))
	t.Cleanup(srv.Close)
	insts := fetch(t, nil,
		srv.URL+"/ok",
		strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)+"/ok",
		"http://10.99.0.1:8080/x",
		"http://169.254.169.254/latest/meta-data/",
		"https://attacker.example/collect",
		srv.URL+"/redirect",
	)
	for _, inst := range insts[:2] {
		require.Equal(t, workflow.StatusCompleted, inst.Status, inst.Error)
	}
	for _, inst := range insts[2:] {
		require.Equal(t, workflow.StatusFailed, inst.Status)
		require.Contains(t, inst.Error, "allowlist")
		require.Equal(t, 1, inst.Steps["get"].Attempt, "a refused host is not retried")
	}
}

func FuzzParseAllowlist(f *testing.F) {
	f.Add("api.example.com,*.corp.example,10.0.0.0/8,::1,*")
	f.Add("[::1]")
	f.Fuzz(func(t *testing.T, list string) {
		a, err := tasks.ParseAllowlist(strings.Split(list, ","))
		if err != nil {
			return
		}
		require.True(t, a.Allows("127.0.0.1"), "loopback is always allowed")
		_ = a.Allows(list)
	})
}
