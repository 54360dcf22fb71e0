package run

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseSize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int{"1024": 1024, "1MiB": 1 << 20, "512KiB": 512 << 10, " 2 MiB ": 2 << 20, "1GiB": 1 << 30} {
		got, err := ParseSize(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "lots", "1MB", "-1", "1.5MiB", "3GiB"} {
		_, err := ParseSize(in)
		require.Error(t, err, in)
	}
}
