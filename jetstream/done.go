package jetstream

import (
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/jetflow/jetflow/workflow"
)

// NotifyDone announces on core NATS that an instance reached a terminal
// state. It is a hint for waiters, delivered at most once; the instance
// bucket is the truth.
func (c *Client) NotifyDone(in *workflow.Instance) {
	_ = c.nc.Publish(DoneSubject(in.Workflow, in.ID), []byte(in.Status))
}

// DoneSubscription receives completion announcements; Stop ends it.
type DoneSubscription struct{ sub *nats.Subscription }

// Stop unsubscribes.
func (s *DoneSubscription) Stop() { _ = s.sub.Unsubscribe() }

// SubscribeDone calls fn for every completion announced for a workflow
// ("*" for all). fn runs on one goroutine, in order.
func (c *Client) SubscribeDone(workflowName string, fn func(instance string, status workflow.Status)) (*DoneSubscription, error) {
	sub, err := c.nc.Subscribe(donePrefix+workflowName+".*", func(m *nats.Msg) {
		id := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
		fn(id, workflow.Status(m.Data))
	})
	if err != nil {
		return nil, err
	}
	_ = sub.SetPendingLimits(-1, -1)
	if err := c.nc.Flush(); err != nil {
		return nil, err
	}
	return &DoneSubscription{sub: sub}, nil
}
