package embedded

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestStoreDirectoryIsLockedWhileAServerHoldsIt: a second server on the
// same store directory fails at once with an error naming the directory
// and the holder's pid, and the directory can be opened again once the
// first server shut down. (Across processes: cmd/dispatcher's
// TestSecondDispatcherOnALockedStoreFails.)
func TestStoreDirectoryIsLockedWhileAServerHoldsIt(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first, err := Start(Config{StoreDir: dir, DontListen: true})
	require.NoError(t, err)

	_, err = Start(Config{StoreDir: dir, DontListen: true})
	require.ErrorIs(t, err, ErrStoreLocked)
	var locked *StoreLockedError
	require.True(t, errors.As(err, &locked))
	abs, _ := filepath.Abs(dir)
	require.Equal(t, abs, locked.Dir)
	require.Equal(t, os.Getpid(), locked.PID)
	require.Contains(t, err.Error(), abs)
	require.Contains(t, err.Error(), "pid ")

	first.Shutdown()
	again, err := Start(Config{StoreDir: dir, DontListen: true})
	require.NoError(t, err, "the lock is released by Shutdown")
	again.Shutdown()
}
