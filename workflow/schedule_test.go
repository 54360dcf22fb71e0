package workflow_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/workflow"
)

// TestScheduleNextFireTimes: the documented next fire times of cron
// patterns in time zones (docs/schedules.md), including both daylight
// saving changes, and FireTime naming the fire before a Nats-Schedule-Next.
func TestScheduleNextFireTimes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, cron, zone, after string
		next, then              string
	}{
		{"berlin winter", "0 0 2 * * *", "Europe/Berlin", "2026-01-15T12:00:00Z", "2026-01-16T01:00:00Z", "2026-01-17T01:00:00Z"},
		{"berlin summer", "0 0 2 * * *", "Europe/Berlin", "2026-07-15T12:00:00Z", "2026-07-16T00:00:00Z", "2026-07-17T00:00:00Z"},
		{"weekdays new york from a saturday", "0 30 9 * * mon-fri", "America/New_York", "2026-12-05T00:00:00Z", "2026-12-07T14:30:00Z", "2026-12-08T14:30:00Z"},
		{"daily in tokyo", "@daily", "Asia/Tokyo", "2026-06-01T00:00:00Z", "2026-06-01T15:00:00Z", "2026-06-02T15:00:00Z"},
		{"hourly utc", "@hourly", "", "2026-06-01T10:20:00Z", "2026-06-01T11:00:00Z", "2026-06-01T12:00:00Z"},
		{"every 15 seconds", "*/15 * * * * *", "", "2026-06-01T10:20:07Z", "2026-06-01T10:20:15Z", "2026-06-01T10:20:30Z"},
		// 02:30 does not exist on 29 March 2026 in Berlin: that day has no fire.
		{"spring gap skipped", "0 30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", "2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"},
		// 02:30 happens twice on 25 October 2026 in Berlin: it fires twice.
		{"autumn hour twice", "0 30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", "2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z"},
		{"leap day", "0 0 0 29 2 *", "", "2026-01-01T00:00:00Z", "2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"},
		{"every 90s from the last fire", "@every 90s", "", "2026-06-01T10:20:00.4Z", "2026-06-01T10:21:30Z", "2026-06-01T10:23:00Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sp, err := workflow.ParseScheduleSpec(tc.cron, tc.zone)
			require.NoError(t, err)
			after, err := time.Parse(time.RFC3339Nano, tc.after)
			require.NoError(t, err)
			next, err := sp.Next(after)
			require.NoError(t, err)
			require.Equal(t, tc.next, next.Format(time.RFC3339))
			then, err := sp.Next(next)
			require.NoError(t, err)
			require.Equal(t, tc.then, then.Format(time.RFC3339))
			// A fire whose Nats-Schedule-Next is then is the fire at next.
			require.Equal(t, tc.next, sp.FireTime(then).Format(time.RFC3339))
		})
	}
}

func TestScheduleEventKeysDiffer(t *testing.T) {
	t.Parallel()
	a := time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC)
	require.Equal(t, "schedule:nightly@2026-01-01T00:00:01Z", workflow.ScheduleEventKey("nightly", a))
	require.NotEqual(t, workflow.ScheduleEventKey("nightly", a), workflow.ScheduleEventKey("nightly", a.Add(time.Second)))
	require.NotEqual(t, workflow.ScheduleEventKey("a", a), workflow.ScheduleEventKey("b", a))
	require.NotEqual(t, workflow.ScheduleManualKey("a", a), workflow.ScheduleManualKey("a", a.Add(1)))
}

func schedDef(schedules string) string {
	return "name: w\nversion: 1\nschedules:\n" + schedules + "steps:\n  - {name: a, kind: task, task: t}\n"
}

func TestScheduleValidation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, schedules, want string }{
		{"bad cron field", "  - {name: s, cron: '61 * * * * *'}\n", `schedule "s": cron "61 * * * * *": second field "61": 61 is above the maximum 59`},
		{"five fields", "  - {name: s, cron: '0 * * * *'}\n", "a cron pattern has 6 fields"},
		{"unknown macro", "  - {name: s, cron: '@fortnightly'}\n", "unknown macro"},
		{"unknown zone", "  - {name: s, cron: '@daily', timezone: Mars/Olympus}\n", `unknown time zone "Mars/Olympus"`},
		{"zone path", "  - {name: s, cron: '@daily', timezone: ../../etc/passwd}\n", "unknown time zone"},
		{"zone with every", "  - {name: s, cron: '@every 1m', timezone: Europe/Berlin}\n", "a time zone applies to cron patterns only"},
		{"sub-second every", "  - {name: s, cron: '@every 500ms'}\n", "whole number of seconds, at least 1s"},
		{"fractional every", "  - {name: s, cron: '@every 1500ms'}\n", "whole number of seconds"},
		{"at", "  - {name: s, cron: '@at 2026-01-01T00:00:00Z'}\n", "one-shot @at"},
		{"never fires", "  - {name: s, cron: '0 0 0 30 2 *'}\n", "matches no time within five years"},
		{"duplicate names", "  - {name: s, cron: '@daily'}\n  - {name: s, cron: '@hourly'}\n", `schedule "s" is defined twice`},
		{"missing cron", "  - {name: s}\n", `schedule "s": cron is missing`},
		{"bad name", "  - {name: 'a b', cron: '@daily'}\n", "schedule 1: invalid name: schedule name"},
		{"bad overlap", "  - {name: s, cron: '@daily', overlap: queue}\n", "overlap must be skip"},
		{"bad input", "  - {name: s, cron: '@daily', input: '{nope'}\n", "input is not JSON"},
		{"unknown field", "  - {name: s, cron: '@daily', tz: UTC}\n", "field tz not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := workflow.Parse("s.yaml", []byte(schedDef(tc.schedules)))
			require.Error(t, err)
			require.ErrorIs(t, err, workflow.ErrInvalidDefinition)
			require.Contains(t, err.Error(), tc.want)
		})
	}
	def, err := workflow.Parse("s.yaml", []byte(schedDef("  - {name: nightly, cron: '0 0 2 * * *', timezone: Europe/Berlin, input: '{\"report\": \"daily\"}'}\n  - {name: often, cron: '@every 30s', overlap: allow}\n")))
	require.NoError(t, err)
	s, ok := def.Schedule("nightly")
	require.True(t, ok)
	require.True(t, s.Skips())
	require.JSONEq(t, `{"report":"daily"}`, string(s.InputJSON()))
	o, _ := def.Schedule("often")
	require.False(t, o.Skips())
	require.Equal(t, "null", string(o.InputJSON()))
}

// FuzzScheduleSpec: any pattern and zone either fail with an error or
// give a spec whose fire times move forward, land on whole seconds, and
// name each other: FireTime(Next(t)) is before Next(t), and for cron
// Next(FireTime(n)) == n.
func FuzzScheduleSpec(f *testing.F) {
	for _, s := range []string{"0 0 2 * * *", "@daily", "@every 30s", "*/7 1-5,9 * 1,15 jan-mar mon-fri", "0 0 0 29 2 *", "? ? ? ? ? ?", "0 0/61 * * * *", "@every 1h30m", "1-2-3 * * * * *", "*/0 * * * * *", "@at 2026-01-01T00:00:00Z"} {
		for _, z := range []string{"", "Europe/Berlin", "America/New_York", "Nowhere/Else", "../x"} {
			f.Add(s, z, int64(1780000000))
		}
	}
	f.Fuzz(func(t *testing.T, pattern, zone string, unix int64) {
		sp, err := workflow.ParseScheduleSpec(pattern, zone)
		if err != nil {
			require.NotEmpty(t, err.Error())
			return
		}
		// The definition parser accepts it too.
		src := schedDef("  - {name: s, cron: " + quote(pattern) + ", timezone: " + quote(zone) + "}\n")
		if _, err := workflow.Parse("f.yaml", []byte(src)); err != nil && strings.Contains(err.Error(), "cron") {
			t.Fatalf("spec parses but definition rejects it: %v", err)
		}
		at := time.Unix(unix%(4e9), 0).UTC() // 1970..2096
		n, err := sp.Next(at)
		if err != nil {
			return // no fire within five years of at
		}
		require.True(t, n.After(at), "next %v not after %v", n, at)
		require.Zero(t, n.Nanosecond())
		fire := sp.FireTime(n)
		require.True(t, fire.Before(n), "fire %v not before next %v", fire, n)
		if sp.Every() == 0 {
			back, err := sp.Next(fire)
			require.NoError(t, err)
			require.Equal(t, n, back, "Next(FireTime(%v)) = %v", n, back)
		}
	})
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func TestDebounceValidation(t *testing.T) {
	t.Parallel()
	def := func(extra string) string {
		return "name: w\nversion: 1\ntrigger: {subject: a.b, key: id" + extra + "}\nsteps:\n  - {name: a, kind: task, task: t}\n"
	}
	for _, tc := range []struct{ name, extra, want string }{
		{"zero", ", debounce: 0s", "trigger debounce must be positive"},
		{"negative", ", debounce: -1s", "must not be negative"},
		{"max_wait below debounce", ", debounce: 5s, max_wait: 1s", "trigger max_wait (1s) must be at least debounce (5s)"},
		{"max_wait alone", ", max_wait: 5s", "set debounce too"},
		{"rerun", ", debounce: 5s, on_duplicate: rerun", "cannot be combined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := workflow.Parse("d.yaml", []byte(def(tc.extra)))
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
	d, err := workflow.Parse("d.yaml", []byte(def(", debounce: 5s, max_wait: 1m")))
	require.NoError(t, err)
	deb, mw := d.Trigger.Debounces()
	require.Equal(t, 5*time.Second, deb)
	require.Equal(t, time.Minute, mw)
}

// TestDebounceWindow: the rules of a window, step by step.
func TestDebounceWindow(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st, ch := workflow.DebounceEvent(nil, "k", 10, now, time.Second, 3*time.Second)
	require.True(t, ch)
	require.Equal(t, workflow.DebounceState{Key: "k", First: 10, FirstAt: now, Last: 10, Due: now.Add(time.Second)}, st)
	// A later event moves Due; a redelivered or older one changes nothing.
	st, ch = workflow.DebounceEvent(&st, "k", 12, now.Add(800*time.Millisecond), time.Second, 3*time.Second)
	require.True(t, ch)
	require.Equal(t, uint64(12), st.Last)
	require.Equal(t, now.Add(1800*time.Millisecond), st.Due)
	_, ch = workflow.DebounceEvent(&st, "k", 12, now.Add(900*time.Millisecond), time.Second, 3*time.Second)
	require.False(t, ch)
	_, ch = workflow.DebounceEvent(&st, "k", 11, now.Add(900*time.Millisecond), time.Second, 3*time.Second)
	require.False(t, ch)
	// max_wait caps Due at FirstAt + 3s.
	st, _ = workflow.DebounceEvent(&st, "k", 20, now.Add(2500*time.Millisecond), time.Second, 3*time.Second)
	require.Equal(t, now.Add(3*time.Second), st.Due)
	// Closed: no later event → delete; a later one → the next window.
	st.Closing = st.Last
	require.Nil(t, workflow.DebounceAfterStart(st, now.Add(4*time.Second), time.Second))
	st, _ = workflow.DebounceEvent(&st, "k", 25, now.Add(3500*time.Millisecond), time.Second, 3*time.Second)
	nextWin := workflow.DebounceAfterStart(st, now.Add(4*time.Second), time.Second)
	require.Equal(t, &workflow.DebounceState{Key: "k", First: 25, FirstAt: now.Add(4 * time.Second), Last: 25, Due: now.Add(5 * time.Second)}, nextWin)
	require.NotEqual(t, workflow.DebounceEventKey("k", 10), workflow.DebounceEventKey("k", 25))
}
