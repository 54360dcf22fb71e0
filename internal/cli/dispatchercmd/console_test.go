package dispatchercmd

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
)

// TestDispatcherServesTheConsole: with --ui-listen the dispatcher serves
// the web console on its own connection, and stops it when it stops.
func TestDispatcherServesTheConsole(t *testing.T) {
	t.Parallel()
	e := jftest.StartTCP(t, jetstream.Config{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, []string{"--nats-url", e.URL, "--log-level", "error", "--repair-interval", "-1s", "--name", "ui-d", "--ui-listen", addr})
	}()
	jftest.Eventually(t, 60*time.Second, func() bool {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && strings.Contains(string(b), `id="dispatcher-count">1<`)
	}, "the dispatcher's console does not show the dispatcher")
	cancel()
	require.NoError(t, <-done)
	_, err = http.Get("http://" + addr + "/")
	require.Error(t, err, "the console stopped with the dispatcher")
}
