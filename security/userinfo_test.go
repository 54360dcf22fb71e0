package security_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/security"
	"github.com/jetflow/jetflow/workflow"
)

// TestRolesKnowWhatTheyMayPublish: the console asks the server what its
// credentials may publish and offers cancel only when they may. The
// operator may ask and may cancel and signal; the worker may not ask
// (the console then hides actions).
func TestRolesKnowWhatTheyMayPublish(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	defs := parseDefs(t, parentDef, childDef)
	s := startSecured(t, securedOptions{scope: security.ScopeOf(defs)})
	cancelSubject := jetstream.EventKindSubject("x", workflow.EventCancel)

	operator, _ := s.connect(security.Operator, jetstream.Config{})
	rules, err := operator.PublishPermissions(ctx, 5*time.Second)
	require.NoError(t, err)
	require.NotEmpty(t, rules.Allow, "the operator's permissions are an allow list")
	require.True(t, rules.May(cancelSubject))
	require.True(t, rules.May(jetstream.EventKindSubject("x", workflow.EventSignal)))
	require.True(t, rules.May(jetstream.EventKindSubject("x", workflow.EventRetry)))
	require.True(t, rules.May(strings.TrimSuffix(jetstream.DLQReplayedSubjects, "*")+"7"), "the operator may mark dead letters replayed")
	require.False(t, rules.May(jetstream.EventKindSubject("x", workflow.EventResult)), "the operator may not publish results")
	require.False(t, rules.May("$JS.API.STREAM.DELETE."+jetstream.StreamEvents))

	worker, _ := s.connect(security.Worker, jetstream.Config{})
	_, err = worker.PublishPermissions(ctx, 5*time.Second)
	require.ErrorIs(t, err, jetstream.ErrPermissionsUnknown)
}
