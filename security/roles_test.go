package security_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/security"
)

// TestRuntimeRolesCannotChangeAssets: no role but the admin may create,
// update, delete or purge a stream, create a consumer on a jetflow stream
// (only ordered consumers on KV streams, to read keys), write
// definitions, or use another role's inbox (but the dispatcher, which
// answers operators and workers); every role has its own inbox.
func TestRuntimeRolesCannotChangeAssets(t *testing.T) {
	t.Parallel()
	scope := security.Scope{TriggerSubjects: []string{"orders.>"}}
	inboxes := map[string]security.Role{}
	for _, r := range security.Roles() {
		p, err := security.For(r, scope)
		require.NoError(t, err)
		require.Equal(t, r.InboxPrefix(), p.InboxPrefix)
		require.NotContains(t, inboxes, p.InboxPrefix, "%s shares an inbox prefix", r)
		inboxes[p.InboxPrefix] = r
		if r == security.Admin {
			require.True(t, p.Unrestricted)
			continue
		}
		require.False(t, p.Unrestricted)
		for _, s := range p.Publish {
			for _, forbidden := range []string{"$JS.API.STREAM.CREATE", "$JS.API.STREAM.UPDATE", "$JS.API.STREAM.DELETE", "$JS.API.STREAM.PURGE",
				"$JS.API.CONSUMER.CREATE.JETFLOW_", "$JS.API.CONSUMER.DURABLE", "$JS.API.CONSUMER.DELETE.JETFLOW_", "$KV.jetflow_definitions", "$JS.API.>", ">"} {
				require.False(t, strings.HasPrefix(s, forbidden), "%s may publish %s", r, s)
			}
			if strings.HasPrefix(s, "_INBOX") {
				// Only the dispatcher answers: stats to operators, effect
				// requests to workers.
				require.Equal(t, security.Dispatcher, r, "%s may publish to inbox %s", r, s)
				require.Contains(t, []string{security.Operator.InboxPrefix() + ".>", security.Worker.InboxPrefix() + ".>"}, s,
					"the dispatcher may publish to inbox %s (only answers to operators and workers are allowed)", s)
			}
		}
		for _, s := range p.Subscribe {
			if strings.HasPrefix(s, "_INBOX") {
				require.Equal(t, r.InboxPrefix()+".>", s, "%s may read another role's replies", r)
			}
			require.NotEqual(t, ">", s)
		}
	}
}

// TestWorkerScope: a worker limited to task types names only their
// consumers; unlimited, every consumer of the task stream.
func TestWorkerScope(t *testing.T) {
	t.Parallel()
	limited, err := security.For(security.Worker, security.Scope{TaskTypes: []string{"resize"}})
	require.NoError(t, err)
	all, err := security.For(security.Worker, security.Scope{})
	require.NoError(t, err)
	has := func(p security.Permissions, s string) bool {
		for _, x := range p.Publish {
			if x == s {
				return true
			}
		}
		return false
	}
	require.True(t, has(limited, "$JS.API.CONSUMER.MSG.NEXT.JETFLOW_TASKS.worker_resize"))
	require.False(t, has(limited, "$JS.API.CONSUMER.MSG.NEXT.JETFLOW_TASKS.*"))
	require.True(t, has(all, "$JS.API.CONSUMER.MSG.NEXT.JETFLOW_TASKS.*"))
	_, err = security.For(security.Worker, security.Scope{TaskTypes: []string{"bad type"}})
	require.Error(t, err)
}
