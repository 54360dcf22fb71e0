package jetstream

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/jetflow/jetflow/workflow"
)

// ErrPermissionDenied matches every error of a request the NATS server
// refused because the connection's user may not publish to its subject
// or subscribe to where its answer goes (see PermissionError).
var ErrPermissionDenied = errors.New("permission denied by the NATS server")

// PermissionError is a permissions violation the server reported for
// one subject. NATS reports it asynchronously, so a request to a denied
// subject would otherwise only time out; the client watches for the
// report and fails the request with this error at once.
type PermissionError struct {
	// Op is "publish" or "subscribe".
	Op string
	// Subject is the subject the user may not use.
	Subject string
	// Server is the server's text.
	Server string
}

func (e *PermissionError) Error() string {
	return fmt.Sprintf("%v: this NATS user may not %s %s (server: %s)", ErrPermissionDenied, e.Op, e.Subject, e.Server)
}

// Unwrap makes the error match ErrPermissionDenied.
func (e *PermissionError) Unwrap() error { return ErrPermissionDenied }

var (
	violationPubRe = regexp.MustCompile(`Publish to "([^"]+)"`)
	violationSubRe = regexp.MustCompile(`Subscription to "([^"]+)"`)
)

// parseViolation reads nats.go's error for a permissions violation.
func parseViolation(err error) (*PermissionError, bool) {
	if !errors.Is(err, nats.ErrPermissionViolation) {
		return nil, false
	}
	text := err.Error()
	if m := violationPubRe.FindStringSubmatch(text); m != nil {
		return &PermissionError{Op: "publish to", Subject: m[1], Server: text}, true
	}
	if m := violationSubRe.FindStringSubmatch(text); m != nil {
		return &PermissionError{Op: "subscribe to", Subject: m[1], Server: text}, true
	}
	return &PermissionError{Op: "use", Subject: "?", Server: text}, true
}

// violations hands permission violations the async error handler sees to
// the requests waiting on matching subjects. It remembers the last few,
// so a pipelined publish whose violation came back before its caller
// started waiting still sees it (watch from a mark taken before
// publishing).
type violations struct {
	mu      sync.Mutex
	waiters map[*violationWaiter]struct{}
	seq     uint64
	recent  []seenViolation // the last maxRecentViolations
	inbox   string          // the connection's inbox wildcard, watched by every waiter
}

type seenViolation struct {
	seq uint64
	pe  *PermissionError
}

const maxRecentViolations = 64

type violationWaiter struct {
	patterns []string
	ch       chan *PermissionError // buffered 1; or
	cancel   context.CancelCauseFunc
}

func (w *violationWaiter) deliver(pe *PermissionError) {
	if w.cancel != nil {
		w.cancel(pe)
		return
	}
	select {
	case w.ch <- pe:
	default:
	}
}

func newViolations(inboxPrefix string) *violations {
	if inboxPrefix == "" {
		inboxPrefix = strings.TrimSuffix(nats.InboxPrefix, ".")
	}
	return &violations{waiters: map[*violationWaiter]struct{}{}, inbox: inboxPrefix + ".>"}
}

// mark returns the position after the last violation seen so far.
func (v *violations) mark() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.seq
}

// watch registers interest in violations after mark on subjects matching
// patterns (NATS wildcards) or on the inbox: the first one is sent on
// w.ch. stop must be called.
func (v *violations) watch(mark uint64, patterns ...string) (w *violationWaiter, stop func()) {
	return v.add(mark, &violationWaiter{patterns: patterns, ch: make(chan *PermissionError, 1)})
}

// watchCancel is watch that cancels with the violation as the cause.
func (v *violations) watchCancel(cancel context.CancelCauseFunc, patterns ...string) (stop func()) {
	_, stop = v.add(v.mark(), &violationWaiter{patterns: patterns, cancel: cancel})
	return stop
}

func (v *violations) add(mark uint64, w *violationWaiter) (*violationWaiter, func()) {
	w.patterns = append(w.patterns[:len(w.patterns):len(w.patterns)], v.inbox)
	v.mu.Lock()
	for _, r := range v.recent {
		if r.seq > mark && w.matches(r.pe) {
			w.deliver(r.pe)
			break
		}
	}
	v.waiters[w] = struct{}{}
	v.mu.Unlock()
	return w, func() {
		v.mu.Lock()
		delete(v.waiters, w)
		v.mu.Unlock()
	}
}

// report delivers a violation to every waiter whose patterns match.
func (v *violations) report(pe *PermissionError) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.seq++
	v.recent = append(v.recent, seenViolation{seq: v.seq, pe: pe})
	if len(v.recent) > maxRecentViolations {
		v.recent = v.recent[len(v.recent)-maxRecentViolations:]
	}
	for w := range v.waiters {
		if w.matches(pe) {
			w.deliver(pe)
		}
	}
}

func (w *violationWaiter) matches(pe *PermissionError) bool {
	for _, p := range w.patterns {
		if subjectMatches(p, pe.Subject) {
			return true
		}
	}
	return false
}

// subjectMatches reports whether subject (whose wildcard tokens are taken
// literally) matches pattern.
func subjectMatches(pattern, subject string) bool { return workflow.SubjectMatches(pattern, subject) }

// guarded runs do with a context that ends as soon as the server reports
// a permissions violation on a subject matching one of patterns or on
// this client's inbox; the error then is that *PermissionError.
func (c *Client) guarded(ctx context.Context, patterns []string, do func(context.Context) error) error {
	gctx, done := c.guard(ctx, patterns...)
	return done(do(gctx))
}

// guard is guarded for code that is not a closure: it returns the
// context to run the requests under and done, which must be called with
// their error, once.
func (c *Client) guard(ctx context.Context, patterns ...string) (context.Context, func(error) error) {
	gctx, cancel := context.WithCancelCause(ctx)
	stop := c.perms.watchCancel(cancel, patterns...)
	return gctx, func(err error) error {
		stop()
		defer cancel(nil)
		var pe *PermissionError
		if err != nil && errors.As(context.Cause(gctx), &pe) {
			return pe
		}
		return err
	}
}
