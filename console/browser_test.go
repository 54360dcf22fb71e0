package console_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/console"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/workflow"
)

// chromium finds a Chromium or Chrome binary: $JETFLOW_CHROMIUM, then the
// usual names on PATH.
func chromium() string {
	if p := os.Getenv("JETFLOW_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// pageErrors collects what the page reports as an error: console.error
// calls, uncaught exceptions, and browser log entries of level error
// (a resource that failed to load, a Content-Security-Policy violation).
type pageErrors struct {
	mu   sync.Mutex
	errs []string
}

func (p *pageErrors) listen(ev any) {
	var msg string
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var parts []string
			for _, a := range ev.Args {
				parts = append(parts, string(a.Value))
			}
			msg = "console." + string(ev.Type) + ": " + strings.Join(parts, " ")
		}
	case *runtime.EventExceptionThrown:
		msg = "exception: " + ev.ExceptionDetails.Text
		if ev.ExceptionDetails.Exception != nil {
			msg += " " + ev.ExceptionDetails.Exception.Description
		}
	case *cdplog.EventEntryAdded:
		if ev.Entry.Level == cdplog.EntryLevelError {
			msg = "log: " + ev.Entry.Text + " " + ev.Entry.URL
		}
	}
	if msg != "" {
		p.mu.Lock()
		p.errs = append(p.errs, msg)
		p.mu.Unlock()
	}
}

func (p *pageErrors) list() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.errs...)
}

// TestConsoleInABrowser drives a real Chromium through the console: the
// overview (updating itself), the instances filter, an instance's
// timeline with its steps, and a cancel and a retry confirmed end to end. It saves a
// screenshot of each under the test's temporary directory and fails on
// any error the page reports. With JETFLOW_UPDATE_SCREENSHOT=1 it
// writes the instance page to docs/console.png; JETFLOW_SCREENSHOT_DIR
// keeps the screenshots in that directory instead. It skips when no
// Chromium is installed (Debian: apt-get install chromium), or when
// JETFLOW_BROWSER_TEST=0.
func TestConsoleInABrowser(t *testing.T) {
	if os.Getenv("JETFLOW_BROWSER_TEST") == "0" {
		t.Skip("JETFLOW_BROWSER_TEST=0")
	}
	exe := chromium()
	if exe == "" {
		t.Skip("no Chromium found: install it (Debian: apt-get install chromium) or set JETFLOW_CHROMIUM; .ci/run installs it")
	}
	e := setup(t, console.Config{Refresh: 500 * time.Millisecond})
	order := e.start("order", "o-42", `{"id":"o-42","amount":42,"items":["book","lamp"]}`)
	jftest.Eventually(t, 30*time.Second, func() bool {
		in := e.Instance(order)
		return in != nil && in.Steps["ship"] != nil
	}, "the order does not reach its wait step")
	hold := e.start("hold", "h-1", `{}`)
	failed := e.start("gate", "g-1", `{"amount":7}`)
	require.Equal(t, workflow.StatusFailed, e.WaitTerminal(failed, 30*time.Second).Status)
	fan := e.start("fan", "f-1", `{"to":["a","b","c"]}`)
	e.WaitTerminal(fan, 30*time.Second)

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	errs := &pageErrors{}
	ctx, cancelCtx := chromedp.NewContext(actx, chromedp.WithListener(errs.listen))
	defer cancelCtx()
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	defer cancelTimeout()
	require.NoError(t, chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, cdplog.Enable, cdp.Empty{})
		return err
	})))
	dir := t.TempDir()
	if d := os.Getenv("JETFLOW_SCREENSHOT_DIR"); d != "" { // keep them
		dir = d
	}
	shot := func(name string) string {
		t.Helper()
		b, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		require.NoError(t, err)
		p := filepath.Join(dir, name+".png")
		require.NoError(t, os.WriteFile(p, b, 0o644))
		t.Logf("screenshot %s", p)
		return p
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(sel)))
		require.NoError(t, err, sel)
		return strings.TrimSpace(s)
	}
	// waitText waits until the element's text contains want, without
	// reloading the page (the page's own live update must bring it).
	waitText := func(sel, want string) {
		t.Helper()
		var last string
		deadline := time.Now().Add(30 * time.Second)
		for {
			s, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector(%q)||{}).textContent||""`, sel)))
			require.NoError(t, err)
			if last = s; strings.Contains(s, want) {
				return
			}
			require.True(t, time.Now().Before(deadline), "%s never showed %q (last: %q)", sel, want, last)
			time.Sleep(100 * time.Millisecond) // polling the page with a deadline
		}
	}

	// The overview: the fleet, and the rates arriving by live update.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(e.srv.URL+"/"), chromedp.WaitVisible(chromedp.ID("rates"))))
	waitText("#dispatcher-count", "1")
	waitText("#worker-count", "1")
	require.NoError(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.ID("live"))), "the live badge shows that the script runs")
	waitText("#rates-note", "Rates over the last")
	shot("overview")

	// The instances list filtered by workflow through the form.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(e.srv.URL+"/instances"),
		chromedp.WaitVisible(chromedp.ID("filter")),
		chromedp.SetValue(chromedp.ID("f-workflow"), "order"),
	))
	_, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("f-apply")))
	require.NoError(t, err)
	require.Contains(t, text("#count"), "1 matching of")
	loc, err := chromedp.Run(ctx, chromedp.Location())
	require.NoError(t, err)
	require.Contains(t, loc, "workflow=order")
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#instances tr[data-id]")].map(r => r.dataset.id)`))
	require.NoError(t, err)
	require.Equal(t, []string{order}, rows)
	shot("instances-filtered")

	// The order's page: its timeline has a row per step, the retried
	// charge with each of its attempts.
	_, err = chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(`#instances a[href="/instances/`+order+`"]`)))
	require.NoError(t, err)
	require.NoError(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.ID("timeline"))))
	steps, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#timeline g.row")].map(r => r.dataset.step)`))
	require.NoError(t, err)
	require.Equal(t, []string{"charge", "ship"}, steps)
	require.Contains(t, text(`#timeline g.row[data-step="charge"] text.label`), "charge ×2")
	n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('#timeline g.row[data-step="charge"] rect.seg.attempt').length`))
	require.NoError(t, err)
	require.Equal(t, 2, n, "each attempt is a block of its own")
	n, err = chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('#timeline g.row[data-step="charge"] rect.seg.failed.attempt').length`))
	require.NoError(t, err)
	require.Equal(t, 1, n, "the earlier attempt failed")
	require.Contains(t, text("#explain-summary"), "shipped")
	p := shot("instance")
	if os.Getenv("JETFLOW_UPDATE_SCREENSHOT") == "1" {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join("..", "docs", "console.png"), b, 0o644))
		t.Log("docs/console.png updated")
	}

	// Cancel, end to end: the button, the confirmation, the notice, and
	// the status the page brings by itself.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(e.srv.URL+"/instances/"+hold), chromedp.WaitVisible(chromedp.ID("action-cancel"))))
	_, err = chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("action-cancel")))
	require.NoError(t, err)
	require.NoError(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.ID("confirm"))))
	shot("cancel-confirm")
	require.Equal(t, workflow.StatusRunning, e.Instance(hold).Status, "nothing happens before the confirmation")
	_, err = chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("confirm")))
	require.NoError(t, err)
	require.Contains(t, text("#notice"), "cancel requested")
	waitText("#status", "cancelled")
	require.Equal(t, workflow.StatusCancelled, e.Instance(hold).Status)
	shot("cancelled")

	// Retry, end to end: the failed instance continues from its failed
	// step once confirmed, and the page shows it completing by itself.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(e.srv.URL+"/instances/"+failed), chromedp.WaitVisible(chromedp.ID("action-retry"))))
	_, err = chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("action-retry")))
	require.NoError(t, err)
	require.NoError(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.ID("confirm"))))
	require.Contains(t, text("#retry-from"), "its failed or interrupted steps: pay")
	e.gate.Store(true)
	_, err = chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("confirm")))
	require.NoError(t, err)
	require.Contains(t, text("#notice"), "retry requested from pay")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		in := e.Instance(failed)
		if in != nil && in.Status == workflow.StatusCompleted {
			break
		}
		if time.Now().After(deadline) || (in != nil && in.Status == workflow.StatusFailed && in.Retries == 1) {
			t.Fatalf("the retried instance did not complete: %s", describe(in))
		}
	}
	waitText("#status", "completed")
	in := e.Instance(failed)
	require.Equal(t, workflow.StatusCompleted, in.Status)
	require.Equal(t, 1, in.Retries)
	shot("retried")

	// Dead letters and workflows render without errors too.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(e.srv.URL+"/workflows"), chromedp.WaitVisible(chromedp.ID("wf-route"))))
	shot("workflows")
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(e.srv.URL+"/instances/"+fan), chromedp.WaitVisible(chromedp.ID("bulk-notify"))))

	require.Empty(t, errs.list(), "the pages reported errors")
}

// describe prints an instance's status, error and steps for a failure
// message.
func describe(in *workflow.Instance) string {
	if in == nil {
		return "no instance"
	}
	out := fmt.Sprintf("%s %q retries=%d", in.Status, in.Error, in.Retries)
	for name, st := range in.Steps {
		out += fmt.Sprintf(" | %s %s attempt %d %q", name, st.Status, st.Attempt, st.Error)
	}
	return out
}
