package tasks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/jetflow/jetflow/worker"
)

// ErrHostNotAllowed: the http task was asked to call a host that is not
// on its allowlist. The attempt fails permanently.
var ErrHostNotAllowed = errors.New("host not on the http task's allowlist (--http-allow)")

// Allowlist says which hosts the http task may call. Why there is one: a
// definition chooses the URL, and a step's input is what the definition
// makes of an instance's data; a definition (or an input) that names an
// attacker's URL would send that data out, and one that names an internal
// address (a cloud metadata endpoint, an admin port) would let whoever
// writes definitions or triggers reach it from the worker's network.
type Allowlist struct {
	any      bool
	names    []string // exact host names, lower case
	suffixes []string // ".example.com" for "*.example.com"
	prefixes []netip.Prefix
}

// loopback is what the http task may call with an empty allowlist.
var loopback = []string{"localhost", "127.0.0.0/8", "::1/128"}

// ParseAllowlist reads allowlist entries: a host name
// ("api.example.com"), every subdomain of one ("*.example.com"), an IP
// address, a CIDR prefix ("10.1.0.0/16"), or "*" (any host; not
// recommended). Loopback (localhost, 127.0.0.0/8, ::1) is always
// allowed. Ports are not restricted.
func ParseAllowlist(entries []string) (*Allowlist, error) {
	a := &Allowlist{}
	for _, e := range append(append([]string(nil), loopback...), entries...) {
		e = strings.ToLower(strings.TrimSpace(e))
		switch {
		case e == "":
		case e == "*":
			a.any = true
		case strings.Contains(e, "/"):
			p, err := netip.ParsePrefix(e)
			if err != nil {
				return nil, fmt.Errorf("--http-allow %q: %w", e, err)
			}
			a.prefixes = append(a.prefixes, p.Masked())
		case strings.HasPrefix(e, "*."):
			if strings.ContainsAny(e[2:], "*:/ ") || e[2:] == "" {
				return nil, fmt.Errorf("--http-allow %q: want *.domain", e)
			}
			a.suffixes = append(a.suffixes, e[1:])
		default:
			if ip, err := netip.ParseAddr(strings.Trim(e, "[]")); err == nil {
				a.prefixes = append(a.prefixes, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
				continue
			}
			if strings.ContainsAny(e, "*:/ ") {
				return nil, fmt.Errorf("--http-allow %q: want a host name, *.domain, an IP address, a CIDR prefix or *", e)
			}
			a.names = append(a.names, strings.TrimSuffix(e, "."))
		}
	}
	return a, nil
}

// name reports whether host (a name, not an address) is allowed by name.
func (a *Allowlist) name(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, n := range a.names {
		if host == n {
			return true
		}
	}
	for _, s := range a.suffixes {
		if strings.HasSuffix(host, s) {
			return true
		}
	}
	return false
}

// addr reports whether an IP address is allowed.
func (a *Allowlist) addr(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range a.prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Allows reports whether the http task may connect to host (a name or
// an IP address, without port): an address in an allowed prefix, or a
// name on the list (whatever it resolves to: allow names whose DNS you
// trust). A name not on the list is refused without being resolved.
func (a *Allowlist) Allows(host string) bool {
	if a.any {
		return true
	}
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return a.addr(ip)
	}
	return a.name(host)
}

// Client returns an HTTP client that connects only to allowed hosts
// (Allows), checked on every connection, redirects included. It uses no
// proxy: through a proxy the check would see the proxy, not the host.
func (a *Allowlist) Client(timeout time.Duration) *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(address)
			if err != nil || !a.Allows(host) {
				return nil, fmt.Errorf("%w: %s", ErrHostNotAllowed, address)
			}
			return dialer.DialContext(ctx, network, address)
		},
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{Timeout: timeout, Transport: tr}
}

// NewHTTP returns the http task, calling only the hosts allow lists (see
// ParseAllowlist) besides loopback.
func NewHTTP(allow []string) (worker.Handler, error) {
	a, err := ParseAllowlist(allow)
	if err != nil {
		return nil, err
	}
	client := a.Client(30 * time.Second)
	return func(ctx context.Context, t *worker.Task) (any, error) { return doHTTP(ctx, client, t) }, nil
}

// HTTP is the http task with the default allowlist: loopback only.
var HTTP = func() worker.Handler {
	h, err := NewHTTP(nil)
	if err != nil {
		panic(err)
	}
	return h
}()

func doHTTP(ctx context.Context, client *http.Client, t *worker.Task) (any, error) {
	_, m, err := field(t, "url")
	if err != nil {
		return nil, err
	}
	url, _ := m["url"].(string)
	if url == "" {
		return nil, worker.Permanent(errors.New("http task: input.url is required"))
	}
	method, _ := m["method"].(string)
	if method == "" {
		method = http.MethodGet
	}
	var body io.Reader
	if b, ok := m["body"].(string); ok {
		body = bytes.NewBufferString(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, worker.Permanent(fmt.Errorf("http task: %w", err))
	}
	resp, err := client.Do(req)
	if errors.Is(err, ErrHostNotAllowed) {
		return nil, worker.Permanent(fmt.Errorf("http task: %s: %w", req.URL.Host, ErrHostNotAllowed))
	}
	if err != nil {
		return nil, fmt.Errorf("http task: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<10))
	if err != nil {
		return nil, fmt.Errorf("http task: read body: %w", err)
	}
	out := map[string]any{"status": int64(resp.StatusCode), "body": string(b)}
	switch {
	case resp.StatusCode >= 500:
		return nil, fmt.Errorf("http task: %s returned %d", url, resp.StatusCode)
	case resp.StatusCode >= 400:
		return nil, worker.Permanent(fmt.Errorf("http task: %s returned %d", url, resp.StatusCode))
	}
	return out, nil
}
