package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
)

// TestRegisterWarnsOfMissingChildWorkflow: a workflow or bulk step that
// names an unregistered workflow is registered with a warning; naming a
// registered one, or one registered in the same call, is not.
func TestRegisterWarnsOfMissingChildWorkflow(t *testing.T) {
	t.Parallel()
	e := jftest.StartTCP(t, jetstream.Config{})
	e.Register(manualDef)
	dir := t.TempDir()
	write := func(name, src string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(src), 0o600))
		return p
	}
	parent := write("parent.yaml", "name: parent\nversion: 1\nsteps:\n  - {name: call, kind: workflow, workflow: kid}\n")
	out, errOut, err := jetflow(t, "--nats-url", e.URL, "register", parent)
	require.NoError(t, err)
	require.Contains(t, out, "registered parent version 1")
	require.Contains(t, errOut, `warning: parent: step "call" starts workflow "kid", which is not registered`)

	kid := write("kid.yaml", "name: kid\nversion: 1\nsteps:\n  - {name: a, kind: task, task: echo}\n")
	_, errOut, err = jetflow(t, "--nats-url", e.URL, "register", parent, kid)
	require.NoError(t, err)
	require.Empty(t, errOut)

	uses := write("uses.yaml", "name: uses\nversion: 1\nsteps:\n  - {name: call, kind: workflow, workflow: manual}\n")
	_, errOut, err = jetflow(t, "--nats-url", e.URL, "register", uses)
	require.NoError(t, err)
	require.Empty(t, errOut)
}
