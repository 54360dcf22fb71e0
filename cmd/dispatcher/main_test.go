package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// runAsDispatcher makes the test binary act as cmd/dispatcher: a test
// starts it again with this variable set and the dispatcher's flags, so
// the tests below run real, separate dispatcher processes.
const runAsDispatcher = "JETFLOW_TEST_RUN_DISPATCHER"

func TestMain(m *testing.M) {
	if os.Getenv(runAsDispatcher) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// proc is a dispatcher process started from the test binary.
type proc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr bytes.Buffer
	ready  chan struct{}
	exited chan struct{}
	err    error // the exit status, once exited is closed
}

// startDispatcher starts a dispatcher process on store dir (in-process
// connections only, so only the store directory is shared).
func startDispatcher(t *testing.T, dir string) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "--store-dir", dir, "--listen", "", "--log-format", "json", "--repair-interval", "-1s")
	cmd.Env = append(os.Environ(), runAsDispatcher+"=1")
	pipe, err := cmd.StderrPipe()
	require.NoError(t, err)
	p := &proc{cmd: cmd, ready: make(chan struct{}), exited: make(chan struct{})}
	require.NoError(t, cmd.Start())
	go func() {
		sc := bufio.NewScanner(pipe)
		var once sync.Once
		for sc.Scan() {
			p.mu.Lock()
			p.stderr.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			if strings.Contains(sc.Text(), `"dispatcher running"`) {
				once.Do(func() { close(p.ready) })
			}
		}
		_, _ = io.Copy(io.Discard, pipe)
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// waitReady waits until the process logged "dispatcher running".
func (p *proc) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-p.ready:
	case <-p.exited:
		t.Fatalf("dispatcher exited before it was ready: %v\n%s", p.err, p.output())
	case <-time.After(60 * time.Second):
		t.Fatalf("dispatcher not ready after 60s:\n%s", p.output())
	}
}

// waitExit waits for the process to end and returns its exit status.
func (p *proc) waitExit(t *testing.T) error {
	t.Helper()
	select {
	case <-p.exited:
		return p.err
	case <-time.After(60 * time.Second):
		t.Fatalf("dispatcher did not exit within 60s:\n%s", p.output())
		return nil
	}
}

// TestSecondDispatcherOnALockedStoreFails: a second dispatcher process on
// the store directory of a running one exits with an error naming the
// directory and the first one's pid, instead of opening the store a
// second time; the lock goes with the holder, whether it stops cleanly
// (SIGTERM) or is killed (SIGKILL).
func TestSecondDispatcherOnALockedStoreFails(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	abs, err := filepath.Abs(dir)
	require.NoError(t, err)

	first := startDispatcher(t, dir)
	first.waitReady(t)

	begin := time.Now()
	second := startDispatcher(t, dir)
	err = second.waitExit(t)
	took := time.Since(begin)
	var exit *exec.ExitError
	require.True(t, errors.As(err, &exit), "the second dispatcher must fail, got %v:\n%s", err, second.output())
	require.Equal(t, 1, exit.ExitCode())
	msg := second.output()
	require.Contains(t, msg, "store directory "+abs+" is in use by another process")
	require.Contains(t, msg, fmt.Sprintf("(pid %d)", first.cmd.Process.Pid))
	t.Logf("second dispatcher on a locked store exited after %s (process start included): %s", took.Round(time.Millisecond), strings.TrimSpace(msg))

	// A clean stop releases the lock.
	require.NoError(t, first.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, first.waitExit(t), first.output())
	third := startDispatcher(t, dir)
	third.waitReady(t)

	// So does a kill: the kernel drops the lock with the process.
	require.NoError(t, third.cmd.Process.Kill())
	_ = third.waitExit(t)
	fourth := startDispatcher(t, dir)
	fourth.waitReady(t)
	require.NoError(t, fourth.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, fourth.waitExit(t), fourth.output())
}
