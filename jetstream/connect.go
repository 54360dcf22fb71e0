package jetstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// ErrConnectRefused matches a first connection that failed for a reason
// retrying cannot fix: the server refused the credentials, or one side
// refused the other's certificate. Connect returns it at once, with the
// reason, instead of retrying until its deadline.
var ErrConnectRefused = errors.New("cannot connect to NATS: a credential or certificate was refused")

// connectWatch follows the first connection of a client that retries on
// failed connects: it is told when the connection is up, when an attempt
// failed and when the connection was closed.
type connectWatch struct {
	mu   sync.Mutex
	last error // the last failed attempt
	tls  int   // TLS failures in a row
	up   chan struct{}
	down chan struct{}
	fail chan error // a failure retrying cannot fix
	once struct{ up, down, fail sync.Once }
}

func newConnectWatch() *connectWatch {
	return &connectWatch{up: make(chan struct{}), down: make(chan struct{}), fail: make(chan error, 1)}
}

func (w *connectWatch) connected() { w.once.up.Do(func() { close(w.up) }) }

func (w *connectWatch) failed(err error) {
	w.mu.Lock()
	w.last = err
	// A server that refuses the client's certificate after the handshake
	// (TLS 1.3) just closes the connection; nats.go reports that as a TLS
	// error without the reason. Twice in a row is not a network hiccup.
	if errors.Is(err, nats.ErrTLS) {
		w.tls++
	} else {
		w.tls = 0
	}
	repeatedTLS := w.tls >= 2
	w.mu.Unlock()
	if fatalConnectError(err) || repeatedTLS {
		w.once.fail.Do(func() { w.fail <- err })
	}
}

func (w *connectWatch) closed(err error) {
	if err != nil {
		w.failed(err)
	}
	w.once.down.Do(func() { close(w.down) })
}

func (w *connectWatch) lastErr() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

// wait waits until nc is connected, an attempt failed for good, nc was
// closed, ctx ended or timeout passed. nats.go reports only the first
// attempt's error to a callback; later ones are read from LastError.
func (w *connectWatch) wait(ctx context.Context, nc *nats.Conn, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	var seen error
	for {
		select {
		case <-poll.C:
			if nc.IsConnected() {
				return nil
			}
			if err := nc.LastError(); err != nil && err != seen {
				seen = err
				w.failed(err)
			}
		case <-w.up:
			return nil
		case err := <-w.fail:
			if closedAfterHandshake(err) {
				return fmt.Errorf("%w: %w (a server that refuses the client certificate, or gets none, closes the connection after the handshake: check --tls-cert and --tls-key)", ErrConnectRefused, err)
			}
			return fmt.Errorf("%w: %w", ErrConnectRefused, err)
		case <-w.down:
			if err := w.lastErr(); err != nil {
				return fmt.Errorf("%w: %w", ErrConnectRefused, err)
			}
			return errors.New("connection closed")
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			if nc.IsConnected() {
				return nil
			}
			if err := w.lastErr(); err != nil {
				return fmt.Errorf("no server answered within %s: %w", timeout, err)
			}
			return fmt.Errorf("no server answered within %s", timeout)
		}
	}
}

// fatalConnectError reports an error of a connection attempt that the
// next attempt would repeat: the server refused the credentials, or a
// certificate was refused on either side.
func fatalConnectError(err error) bool {
	for _, e := range []error{
		nats.ErrAuthorization, nats.ErrAuthExpired, nats.ErrAuthRevoked, nats.ErrAccountAuthExpired,
		nats.ErrSecureConnRequired, nats.ErrSecureConnWanted, nats.ErrNkeysNotSupported,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	var verify *tls.CertificateVerificationError
	if errors.As(err, &verify) {
		return true // the server's certificate does not verify
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		return true // the server refused the TLS handshake: no or a wrong client certificate
	}
	return false
}

// closedAfterHandshake reports a TLS error without a reason: the server
// closed the connection once the handshake was done.
func closedAfterHandshake(err error) bool {
	var verify *tls.CertificateVerificationError
	var op *net.OpError
	return errors.Is(err, nats.ErrTLS) && !errors.As(err, &verify) && !(errors.As(err, &op) && op.Op == "remote error")
}
