package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// DefaultListen is the console's default address.
const DefaultListen = "127.0.0.1:8233"

// Config configures a console.
type Config struct {
	// Client reads (and, for actions, publishes) through the console's
	// NATS credentials. Required.
	Client *jetstream.Client
	// ReadOnly hides and refuses every action (cancel, signal, retry, replay). Default
	// false: actions are offered when the credentials allow them.
	ReadOnly bool
	// Refresh is how often an open overview or running instance page
	// updates itself (with JavaScript). Default 2s; negative: never.
	Refresh time.Duration
	// PageSize is how many instances, children or dead letters a page
	// lists. Default 50.
	PageSize int
	// StatsWait is how long the overview waits for the dispatchers'
	// counters (jetflow.stats). Default 300ms.
	StatsWait time.Duration
	// Policy is the dispatchers' repair policy, for the explanation of
	// what an instance waits for. Default: the dispatchers' defaults.
	Policy workflow.RepairPolicy
	// Logger; default: discard.
	Logger zerolog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// WithDefaults returns the config with defaults filled in.
func (c Config) WithDefaults() Config {
	if c.Refresh == 0 {
		c.Refresh = 2 * time.Second
	}
	if c.PageSize <= 0 {
		c.PageSize = 50
	}
	if c.StatsWait <= 0 {
		c.StatsWait = 300 * time.Millisecond
	}
	if c.Policy == (workflow.RepairPolicy{}) {
		c.Policy = workflow.RepairPolicy{StaleTask: 10 * time.Minute, TimerGrace: 5 * time.Second, StaleBulk: 30 * time.Second}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	if c.Client == nil {
		return errors.New("console: Config.Client is required")
	}
	return nil
}

// Console serves the web console.
type Console struct {
	cfg   Config
	c     *jetstream.Client
	log   zerolog.Logger
	pages map[string]*template.Template
	rates *rates

	capMu      sync.Mutex
	caps       capabilities
	capsAt     time.Time
	capsLoaded bool
}

// New makes a console.
func New(cfg Config) (*Console, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pages, err := parseTemplates()
	if err != nil {
		return nil, err
	}
	return &Console{cfg: cfg, c: cfg.Client, log: cfg.Logger.With().Str("component", "console").Logger(), pages: pages, rates: newRates()}, nil
}

// Handler returns the console's HTTP handler.
func (cs *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/static/favicon.svg", http.StatusMovedPermanently)
	})
	mux.HandleFunc("GET /{$}", cs.overview)
	mux.HandleFunc("GET /workflows", cs.workflows)
	mux.HandleFunc("GET /workflows/{name}/{version}", cs.workflowVersion)
	mux.HandleFunc("GET /instances", cs.instances)
	mux.HandleFunc("GET /instances/{id}", cs.instance)
	mux.HandleFunc("GET /instances/{id}/children/{step}", cs.children)
	mux.HandleFunc("GET /dlq", cs.deadLetters)
	mux.HandleFunc("GET /instances/{id}/cancel", cs.confirmCancel)
	mux.HandleFunc("POST /instances/{id}/cancel", cs.doCancel)
	mux.HandleFunc("GET /instances/{id}/signal", cs.confirmSignal)
	mux.HandleFunc("POST /instances/{id}/signal", cs.doSignal)
	mux.HandleFunc("GET /instances/{id}/retry", cs.confirmRetry)
	mux.HandleFunc("POST /instances/{id}/retry", cs.doRetry)
	mux.HandleFunc("GET /dlq/{seq}/replay", cs.confirmReplay)
	mux.HandleFunc("POST /dlq/{seq}/replay", cs.doReplay)
	mux.HandleFunc("GET /workflows/{name}/pause", cs.confirmPauseOn)
	mux.HandleFunc("POST /workflows/{name}/pause", cs.doPauseOn)
	mux.HandleFunc("GET /workflows/{name}/resume", cs.confirmPauseOff)
	mux.HandleFunc("POST /workflows/{name}/resume", cs.doPauseOff)
	return securityHeaders(mux)
}

// securityHeaders sets headers every answer carries: nothing but the
// console's own assets may load, and no other site may frame it.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		h.ServeHTTP(w, r)
	})
}

// ErrRemoteListen is returned by Serve for an address beyond loopback
// without allowRemote.
var ErrRemoteListen = errors.New("the console has no login of its own: it listens on loopback only unless allowed to listen beyond (--allow-remote), e.g. behind an authenticating proxy")

// Serve serves h on addr until ctx ends, then shuts down within 5s. An
// address that is not loopback needs allowRemote. ready, when not nil,
// is called with the bound address once listening.
func Serve(ctx context.Context, addr string, allowRemote bool, h http.Handler, log zerolog.Logger, ready func(net.Addr)) error {
	if !allowRemote && !loopback(addr) {
		return fmt.Errorf("console address %s: %w", addr, ErrRemoteListen)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("console listener: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	log.Info().Str("addr", "http://"+ln.Addr().String()).Str("component", "console").Msg("console serving")
	if ready != nil {
		ready(ln.Addr())
	}
	select {
	case err := <-done:
		return fmt.Errorf("console server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx) // past its timeout, the requests still open are cut: nothing to report
	<-done
	return nil
}

// loopback reports whether addr's host is a loopback address or
// localhost.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
