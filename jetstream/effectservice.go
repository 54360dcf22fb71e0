package jetstream

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
)

// The effect service. With task tokens, BucketEffects is written by
// dispatchers only: a worker running a step marked once: true asks a
// dispatcher, by request and reply on EffectClaimSubject, to claim the
// step's effect key for its attempt, and on EffectRecordSubject to record
// the outcome over that claim. The dispatcher checks the task token of the
// attempt and the output key before it writes, so a worker cannot claim,
// record or overwrite another task's effect record (docs/security.md).
// Any dispatcher may answer: the KV Create and compare-and-swap decide.

// EffectOp names what an effect request asks for.
type EffectOp string

// The effect operations, one subject each.
const (
	EffectClaim  EffectOp = "claim"
	EffectRecord EffectOp = "record"
)

// Subject is where requests of the operation are sent.
func (op EffectOp) Subject() string {
	if op == EffectRecord {
		return EffectRecordSubject
	}
	return EffectClaimSubject
}

// EffectRequest is what a worker sends to claim an effect key or record
// its outcome. The effect key is workflow.EffectKey(Instance, Step).
type EffectRequest struct {
	Instance string `msgpack:"i"`
	Step     string `msgpack:"s"`
	Attempt  int    `msgpack:"a"`
	// Token is the attempt's task token (workflow.Task.Token).
	Token string `msgpack:"tok"`
	// Delivery is the task message's delivery count (kept in the claim).
	Delivery uint64 `msgpack:"d,omitempty"`
	// Nonce is random per execution (Effect.Token): the record request
	// must name the claim it made.
	Nonce string `msgpack:"n"`
	// Record only: the claim's revision and the outcome (OutputRef on
	// success, Error on failure).
	Revision  uint64 `msgpack:"r,omitempty"`
	OutputRef string `msgpack:"out,omitempty"`
	Error     string `msgpack:"err,omitempty"`
}

// EffectStatus is the answer to an effect request.
type EffectStatus string

// Effect statuses.
const (
	// EffectClaimed: the claim was written; Revision is its revision.
	EffectClaimed EffectStatus = "claimed"
	// EffectExists: the key was claimed before; Record and Revision are
	// what it holds now (possibly the requester's own claim, after a try
	// whose answer was lost: Record.Token is then its nonce).
	EffectExists EffectStatus = "exists"
	// EffectRecorded: the outcome is recorded (now, or by an earlier try
	// of the same request).
	EffectRecorded EffectStatus = "recorded"
	// EffectConflict: the claim changed since Revision; Record is what
	// the key holds now. Nothing was written.
	EffectConflict EffectStatus = "conflict"
	// EffectRefused: the request is forged or malformed (Reason); it is
	// refused for good and nothing was written.
	EffectRefused EffectStatus = "refused"
	// EffectFailed: the dispatcher could not read or write the bucket
	// (Reason); another try may succeed.
	EffectFailed EffectStatus = "failed"
)

// EffectReply is a dispatcher's answer to an EffectRequest.
type EffectReply struct {
	Status   EffectStatus `msgpack:"st"`
	Revision uint64       `msgpack:"r,omitempty"`
	Record   *Effect      `msgpack:"rec,omitempty"`
	Reason   string       `msgpack:"why,omitempty"`
}

// ErrEffectRefused matches the error of an effect request a dispatcher
// refused (EffectRefused).
var ErrEffectRefused = errors.New("effect request refused")

// ErrNoDispatcher matches the error of an effect request no dispatcher
// answered at all (none is subscribed).
var ErrNoDispatcher = errors.New("no dispatcher serves effect requests")

// RequestEffect sends an effect request to the dispatchers and returns
// the answer, bounded by Config.RequestTimeout. A refusal is returned as
// the reply and an error matching ErrEffectRefused; a dispatcher's
// failure (EffectFailed) as the reply and a plain error, so a caller
// retries it.
func (c *Client) RequestEffect(ctx context.Context, op EffectOp, req *EffectRequest) (*EffectReply, error) {
	b, err := encode(req)
	if err != nil {
		return nil, err
	}
	var m *nats.Msg
	err = c.bounded(ctx, func(ctx context.Context) (err error) {
		m, err = c.nc.RequestWithContext(ctx, op.Subject(), b)
		return err
	}, op.Subject())
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, fmt.Errorf("%s effect %s/%s: %w: %w", op, req.Instance, req.Step, ErrNoDispatcher, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%s effect %s/%s: %w", op, req.Instance, req.Step, err)
	}
	var r EffectReply
	if err := decode(m.Data, &r); err != nil {
		return nil, fmt.Errorf("%s effect %s/%s: decode reply: %w", op, req.Instance, req.Step, err)
	}
	switch r.Status {
	case EffectRefused:
		return &r, fmt.Errorf("%s effect %s/%s: %w: %s", op, req.Instance, req.Step, ErrEffectRefused, r.Reason)
	case EffectFailed:
		return &r, fmt.Errorf("%s effect %s/%s: the dispatcher failed: %s", op, req.Instance, req.Step, r.Reason)
	case EffectClaimed, EffectExists, EffectRecorded, EffectConflict:
		return &r, nil
	}
	return nil, fmt.Errorf("%s effect %s/%s: unknown reply status %q", op, req.Instance, req.Step, r.Status)
}

// effectWorkers bounds the effect requests one dispatcher handles at
// once (each is one or two KV requests).
const effectWorkers = 64

// ServeEffects answers effect requests in the dispatchers' queue group
// (EffectQueue) with what handle returns, until ctx ends; it then waits
// for the requests being handled. A request that does not decode gets an
// EffectRefused reply without reaching handle; one without a reply
// subject, or whose reply subject is no worker's inbox (a jetflow or
// server subject, another role's inbox), is dropped (dropped is called
// for both, with the reason).
func (c *Client) ServeEffects(ctx context.Context, handle func(context.Context, EffectOp, *EffectRequest) *EffectReply, dropped func(op EffectOp, reason string)) error {
	sem := make(chan struct{}, effectWorkers)
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		closed bool // no request is started once set
	)
	defer func() {
		mu.Lock()
		closed = true
		mu.Unlock()
		wg.Wait()
	}()
	sub, err := c.nc.QueueSubscribe(EffectSubjects, EffectQueue, func(m *nats.Msg) {
		op := EffectClaim
		switch m.Subject {
		case EffectClaimSubject:
		case EffectRecordSubject:
			op = EffectRecord
		default:
			dropped(EffectOp(m.Subject), "unknown effect subject "+m.Subject)
			return
		}
		if !effectReplyAllowed(m.Reply) {
			dropped(op, fmt.Sprintf("reply subject %q is not a worker's inbox", m.Reply))
			return
		}
		var req EffectRequest
		if err := decode(m.Data, &req); err != nil {
			reason := fmt.Sprintf("malformed effect request: %v", err)
			dropped(op, reason)
			c.respondEffect(m, &EffectReply{Status: EffectRefused, Reason: reason})
			return
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		mu.Lock()
		if closed {
			mu.Unlock()
			<-sem
			return
		}
		wg.Add(1)
		mu.Unlock()
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c.respondEffect(m, handle(ctx, op, &req))
		}()
	})
	if err != nil {
		return err
	}
	<-ctx.Done()
	return sub.Unsubscribe()
}

// effectReplyAllowed keeps the dispatcher from answering an effect
// request where a requester should not make it publish: nowhere, on
// jetflow's own or the server's subjects, or in another role's inbox
// (NATS permissions deny those too on a secured server; an open bus has
// none).
func effectReplyAllowed(reply string) bool {
	if reply == "" || strings.HasPrefix(reply, "$") || strings.HasPrefix(reply, subjectPrefix) {
		return false
	}
	for _, p := range []string{InboxPrefixAdmin, InboxPrefixDispatcher, InboxPrefixProducer, InboxPrefixOperator} {
		if strings.HasPrefix(reply, p+".") {
			return false
		}
	}
	return true
}

func (c *Client) respondEffect(m *nats.Msg, r *EffectReply) {
	b, err := encode(r)
	if err != nil {
		return
	}
	if err := m.Respond(b); err != nil {
		c.log.Warn().Err(err).Str("reply", m.Reply).Msg("cannot answer an effect request")
	}
}
