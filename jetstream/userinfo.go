package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// PublishRules are what a connection's user may publish, as the server
// reported them.
type PublishRules struct {
	// Allow lists the subjects (NATS wildcards) the user may publish to;
	// empty: all not denied.
	Allow []string `json:"allow,omitempty"`
	// Deny lists subjects the user may not publish to; it wins over
	// Allow.
	Deny []string `json:"deny,omitempty"`
}

// ErrPermissionsUnknown is returned by PublishPermissions when the server
// did not say what the user may publish (no system account, or the user
// may not ask).
var ErrPermissionsUnknown = errors.New("the NATS server did not say what this user may publish (" + UserInfoSubject + " unanswered)")

// PublishPermissions asks the server what this connection's user may
// publish. It waits at most wait (default 2s).
func (c *Client) PublishPermissions(ctx context.Context, wait time.Duration) (PublishRules, error) {
	if wait <= 0 {
		wait = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var reply []byte
	err := c.guarded(ctx, []string{UserInfoSubject}, func(ctx context.Context) error {
		m, err := c.nc.RequestWithContext(ctx, UserInfoSubject, nil)
		if err != nil {
			return err
		}
		reply = m.Data
		return nil
	})
	if err != nil {
		return PublishRules{}, fmt.Errorf("%w: %w", ErrPermissionsUnknown, err)
	}
	return parseUserInfo(reply)
}

// parseUserInfo reads the server's answer on UserInfoSubject.
func parseUserInfo(b []byte) (PublishRules, error) {
	var resp struct {
		Data *struct {
			Permissions *struct {
				Publish *PublishRules `json:"publish"`
			} `json:"permissions"`
		} `json:"data"`
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &resp); err != nil {
		return PublishRules{}, fmt.Errorf("%w: %w", ErrPermissionsUnknown, err)
	}
	if resp.Error != nil {
		return PublishRules{}, fmt.Errorf("%w: %s", ErrPermissionsUnknown, resp.Error.Description)
	}
	if resp.Data == nil {
		return PublishRules{}, ErrPermissionsUnknown
	}
	if resp.Data.Permissions == nil || resp.Data.Permissions.Publish == nil {
		return PublishRules{}, nil // no restrictions
	}
	return *resp.Data.Permissions.Publish, nil
}

// May reports whether a literal subject may be published under the rules.
func (r PublishRules) May(subject string) bool {
	for _, d := range r.Deny {
		if subjectMatches(d, subject) {
			return false
		}
	}
	if len(r.Allow) == 0 {
		return true
	}
	for _, a := range r.Allow {
		if subjectMatches(a, subject) {
			return true
		}
	}
	return false
}
