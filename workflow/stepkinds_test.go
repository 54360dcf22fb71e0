package workflow

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// Every step kind has a row in the table, and the table names only
// fields that exist.
func TestStepKindTable(t *testing.T) {
	t.Parallel()
	require.Len(t, stepKindSpecs, len(stepKinds))
	var fields []string
	for _, f := range stepFields {
		fields = append(fields, f.name)
	}
	for _, k := range stepKinds {
		spec, ok := stepKindSpecs[k]
		require.True(t, ok, "kind %s has no entry in stepKindSpecs", k)
		for _, f := range spec.allowed {
			require.Contains(t, fields, f, "kind %s allows an unknown field", k)
		}
		for _, f := range spec.required {
			require.True(t, slices.Contains(spec.allowed, f), "kind %s requires %s without allowing it", k, f)
		}
	}
}
