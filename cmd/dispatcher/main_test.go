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
func startDispatcher(t *testing.T, dir string, args ...string) *proc {
	t.Helper()
	return startWith(t, nil, append([]string{"--store-dir", dir, "--listen", "", "--log-format", "json", "--repair-interval", "-1s"}, args...)...)
}

// startWith starts a dispatcher process with args and the variables env
// added to the test's environment.
func startWith(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), runAsDispatcher+"=1"), env...)
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

// TestBadConfigurationExitsAtStart: a malformed environment variable, a
// positional argument (also one before a flag, which Go's flag package
// silently ended the flags at) and a single-dash flag stop the dispatcher
// at start with a non-zero exit and an error that names the culprit.
func TestBadConfigurationExitsAtStart(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"malformed int", []string{"JETFLOW_SHARDS=abc"}, nil, `JETFLOW_SHARDS="abc" is not a valid --shards`},
		{"duration without unit", []string{"JETFLOW_REPAIR_INTERVAL=5"}, nil, `JETFLOW_REPAIR_INTERVAL="5" is not a valid --repair-interval`},
		{"retention not a duration", []string{"JETFLOW_INSTANCE_RETENTION=30days"}, nil, "JETFLOW_INSTANCE_RETENTION"},
		{"malformed bool", []string{"JETFLOW_WORKER=yes please"}, nil, "JETFLOW_WORKER"},
		{"extra argument", nil, []string{"extra-arg"}, `dispatcher takes no arguments, got ["extra-arg"]`},
		{"argument before a flag", nil, []string{"extra-arg", "--worker"}, `dispatcher takes no arguments, got ["extra-arg"]`},
		{"single-dash flag", nil, []string{"-worker"}, "unknown shorthand flag"},
		{"unknown flag", nil, []string{"--shardz", "3"}, "unknown flag: --shardz"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"--store-dir", t.TempDir(), "--listen", ""}, c.args...)
			p := startWith(t, c.env, args...)
			err := p.waitExit(t)
			var exit *exec.ExitError
			require.True(t, errors.As(err, &exit), "the dispatcher must fail, got %v:\n%s", err, p.output())
			require.Equal(t, 1, exit.ExitCode())
			require.Contains(t, p.output(), c.want)
			require.True(t, strings.HasPrefix(p.output(), "dispatcher: "), p.output())
		})
	}
}

// TestCleanShutdownLogsNoWarning: a dispatcher (with its in-process
// worker) stopped by SIGTERM exits 0 and logs no "nats disconnected"
// warning; its durations are logged with units.
func TestCleanShutdownLogsNoWarning(t *testing.T) {
	t.Parallel()
	p := startDispatcher(t, t.TempDir(), "--worker")
	p.waitReady(t)
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, p.waitExit(t), p.output())
	out := p.output()
	require.Contains(t, out, `"repair_interval":"-1s"`, "durations carry their unit")
	for _, line := range strings.Split(out, "\n") {
		require.False(t, strings.Contains(line, `"level":"warn"`) && strings.Contains(line, "disconnected"), line)
	}
}
