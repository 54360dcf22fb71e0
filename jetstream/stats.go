package jetstream

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"
)

// ServeStats answers requests on StatsSubject until ctx ends, with a
// JSON object: "dispatcher" (name), "stats" (the JSON of stats()) and
// "pause_revision" (pauseRevision(): the revision of the last pause
// record the dispatcher applied; jetflow pause waits for it).
func (c *Client) ServeStats(ctx context.Context, name string, stats func() any, pauseRevision func() uint64) error {
	sub, err := c.nc.Subscribe(StatsSubject, func(m *nats.Msg) {
		b, err := json.Marshal(StatsAnswer{Dispatcher: name, Stats: stats(), PauseRevision: pauseRevision()})
		if err != nil {
			c.log.Error().Err(err).Msg("cannot encode this dispatcher's stats; jetflow stats will not list it")
			return
		}
		if err := m.Respond(b); err != nil {
			// The asker stops waiting after its timeout either way.
			c.log.Debug().Err(err).Msg("cannot answer a stats request")
		}
	})
	if err != nil {
		return err
	}
	<-ctx.Done()
	return sub.Unsubscribe()
}

// StatsAnswer is a dispatcher's answer on StatsSubject.
type StatsAnswer struct {
	Dispatcher string `json:"dispatcher"`
	Stats      any    `json:"stats"`
	// PauseRevision: the dispatcher applied every pause record up to
	// this revision of BucketFlow (PauseState.Revision).
	PauseRevision uint64 `json:"pause_revision"`
}

// CollectStats asks every dispatcher for its counters and gathers the
// answers that arrive within wait.
func (c *Client) CollectStats(ctx context.Context, wait time.Duration) ([]json.RawMessage, error) {
	inbox := c.nc.NewRespInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := c.nc.PublishRequest(StatsSubject, inbox, nil); err != nil {
		return nil, err
	}
	var out []json.RawMessage
	deadline := time.Now().Add(wait)
	for {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			return out, nil // timeout: that is everyone who answered
		}
		out = append(out, json.RawMessage(m.Data))
		if ctx.Err() != nil {
			return out, nil
		}
	}
}
