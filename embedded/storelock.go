package embedded

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// StoreLockFile is the file in an embedded server's store directory that
// the running process holds an exclusive lock on; it contains that
// process's pid.
const StoreLockFile = "jetflow.lock"

// ErrStoreLocked matches the error Start returns when another
// process holds the store directory (see StoreLockedError).
var ErrStoreLocked = errors.New("store directory is in use by another process")

// StoreLockedError says which directory is held and, when the lock file
// names it, by which process.
type StoreLockedError struct {
	Dir string
	// PID of the holder; 0 when the lock file does not name one.
	PID int
}

func (e *StoreLockedError) Error() string {
	holder := "another process"
	if e.PID > 0 {
		holder = fmt.Sprintf("another process (pid %d)", e.PID)
	}
	return fmt.Sprintf("store directory %s is in use by %s; only one process may open a JetStream store: stop that process or choose another --store-dir", e.Dir, holder)
}

// Is makes errors.Is(err, ErrStoreLocked) hold.
func (e *StoreLockedError) Is(target error) bool { return target == ErrStoreLocked }

// storeLock is an exclusive lock on a store directory, held until release.
type storeLock struct {
	f *os.File
}

// lockStore takes the exclusive lock on dir's lock file without waiting,
// and writes this process's pid into it. The lock belongs to the open
// file: the kernel releases it when the process exits, however it exits.
func lockStore(dir string) (*storeLock, error) {
	path := filepath.Join(dir, StoreLockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("embedded server: open lock file: %w", err)
	}
	held, err := tryLock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("embedded server: lock %s: %w", path, err)
	}
	if !held {
		b, _ := os.ReadFile(path)
		f.Close()
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return nil, &StoreLockedError{Dir: dir, PID: pid}
	}
	// The file is never removed: a process that opened it just before a
	// removal would lock a file nobody else sees.
	if err := f.Truncate(0); err == nil {
		// Best effort: the pid only names the holder in another
		// process's StoreLockedError.
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &storeLock{f: f}, nil
}

// release gives the lock up.
func (l *storeLock) release() {
	if l != nil && l.f != nil {
		_ = l.f.Close()
		l.f = nil
	}
}
