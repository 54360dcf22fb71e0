package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/console"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
)

// freeAddr is a loopback address nobody listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// TestUICommandServesTheConsole: `jetflow ui` serves the console with
// the CLI's connection until its context ends; it refuses an address
// beyond loopback without --allow-remote.
func TestUICommandServesTheConsole(t *testing.T) {
	t.Parallel()
	e := setup(t, jetstream.Config{})
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		root := newRoot()
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		root.SetArgs([]string{"--nats-url", e.URL, "ui", "--listen", addr, "--read-only"})
		done <- root.ExecuteContext(ctx)
	}()
	var body string
	jftest.Eventually(t, 30*time.Second, func() bool {
		resp, err := http.Get("http://" + addr + "/workflows")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == http.StatusOK
	}, "the console does not answer on %s", addr)
	require.Contains(t, body, `id="wf-order"`)
	require.Contains(t, body, "read-only console")
	cancel()
	require.NoError(t, <-done)

	var errb bytes.Buffer
	root := newRoot()
	root.SetErr(&errb)
	root.SetArgs([]string{"--nats-url", e.URL, "ui", "--listen", "0.0.0.0:0"})
	require.ErrorIs(t, root.ExecuteContext(context.Background()), console.ErrRemoteListen)
}
