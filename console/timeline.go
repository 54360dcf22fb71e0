package console

import (
	"fmt"
	"html/template"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jetflow/jetflow/workflow"
)

// A Gantt-style timeline of an instance: one row per activated step, in
// the order the steps started. A task step draws each attempt as its own
// block, from its history (StepState.History: when each ended attempt
// started and ended, and its error), with the backoff between attempts
// hatched and the wait of the current attempt at a gate (a concurrency
// slot, a rate limit, a pause) in its own block; other steps are one
// block from start to end. Pending timers (retries, timeouts, sleeps,
// wait timeouts, the deadline) are diamonds at their due time.

type timelineSeg struct {
	From, To time.Time
	Class    string // CSS class: the step status, "retrying" or "open"
	Title    string
}

type timelineMark struct {
	At    time.Time
	Kind  string // retry, timeout, sleep, wait, deadline
	Title string
}

type timelineRow struct {
	Step    string
	Label   string
	Segs    []timelineSeg
	Marks   []timelineMark
	Attempt int
}

// TimelineRow is one step's row in the timeline's table (also the text
// alternative of the SVG).
type TimelineRow struct {
	Step, Status   string
	Attempt        int
	Started, Ended time.Time
	AttemptStarted time.Time
	Took           string
	Error          string
}

// parseTimer splits a timer id "<kind>.<step>.<attempt>".
func parseTimer(id string) (kind, step string, attempt int) {
	first := strings.Index(id, ".")
	last := strings.LastIndex(id, ".")
	if first < 0 || last <= first {
		return id, "", 0
	}
	attempt, _ = strconv.Atoi(id[last+1:])
	return id[:first], id[first+1 : last], attempt
}

// attemptSegs draws a task step's attempts, one block each, from its
// history; false when it has none to draw from (not a task step, or an
// instance written before attempts were recorded).
func attemptSegs(n string, st *workflow.StepState, stop time.Time, open bool) ([]timelineSeg, bool) {
	ended := st.Attempt // the attempts the history must hold
	if st.Status == workflow.StepRunning {
		ended--
	}
	if st.Attempt == 0 || len(st.History) < ended || st.Status == workflow.StepRunning && st.Gate == "" && st.AttemptStarted.IsZero() {
		return nil, false
	}
	for _, h := range st.History {
		if h.Started.IsZero() {
			return nil, false
		}
	}
	var segs []timelineSeg
	var last time.Time
	lastAttempt := 0
	for _, h := range st.History {
		if !last.IsZero() && h.Started.After(last) {
			segs = append(segs, timelineSeg{From: last, To: h.Started, Class: "retrying",
				Title: fmt.Sprintf("%s: backoff before attempt %d, %s", n, h.Attempt, h.Started.Sub(last).Round(time.Millisecond))})
		}
		cls, title := "completed attempt", fmt.Sprintf("%s: attempt %d completed, %s", n, h.Attempt, h.Ended.Sub(h.Started).Round(time.Millisecond))
		if h.Error != "" {
			cls, title = "failed attempt", fmt.Sprintf("%s: attempt %d failed after %s — %s", n, h.Attempt, h.Ended.Sub(h.Started).Round(time.Millisecond), h.Error)
		}
		if h.Worker != "" {
			title += " (worker " + h.Worker + ")"
		}
		segs = append(segs, timelineSeg{From: h.Started, To: h.Ended, Class: cls, Title: title})
		last, lastAttempt = h.Ended, h.Attempt
	}
	if st.Status == workflow.StepWaiting && !last.IsZero() {
		segs = append(segs, timelineSeg{From: last, To: stop, Class: "retrying open",
			Title: fmt.Sprintf("%s: backoff before attempt %d, %s so far", n, st.Attempt+1, stop.Sub(last).Round(time.Millisecond))})
	}
	if lastAttempt >= st.Attempt || st.Status != workflow.StepRunning {
		return segs, true // every attempt ended
	}
	// The current attempt: waiting at a gate, or running since its task
	// was published.
	suffix := ""
	if open {
		suffix = " so far"
	}
	from := st.AttemptStarted
	if st.Gate != "" {
		from = st.GateSince
	}
	if from.IsZero() || (!last.IsZero() && from.Before(last)) {
		from = last
	}
	if from.IsZero() {
		from = st.Started
	}
	if !last.IsZero() && from.After(last) {
		segs = append(segs, timelineSeg{From: last, To: from, Class: "retrying",
			Title: fmt.Sprintf("%s: backoff before attempt %d, %s", n, st.Attempt, from.Sub(last).Round(time.Millisecond))})
	}
	cls := "running"
	title := fmt.Sprintf("%s: attempt %d running, %s%s", n, st.Attempt, stop.Sub(from).Round(time.Millisecond), suffix)
	if st.Gate != "" {
		cls = "waiting gate"
		title = fmt.Sprintf("%s: attempt %d waits at gate %s, %s%s", n, st.Attempt, st.Gate, stop.Sub(from).Round(time.Millisecond), suffix)
	}
	if open {
		cls += " open"
	}
	segs = append(segs, timelineSeg{From: from, To: stop, Class: cls, Title: title})
	return segs, true
}

// stepSegs draws a step as one block (its earlier attempts and their
// backoff hatched before the current one, when it has no history).
func stepSegs(n string, st *workflow.StepState, stop time.Time, cls string, open bool) []timelineSeg {
	var segs []timelineSeg
	cur := st.Started
	if st.Attempt > 1 && st.AttemptStarted.After(st.Started) {
		segs = append(segs, timelineSeg{From: st.Started, To: st.AttemptStarted, Class: "retrying",
			Title: fmt.Sprintf("%s: attempts 1–%d and their backoff, %s", n, st.Attempt-1, st.AttemptStarted.Sub(st.Started).Round(time.Millisecond))})
		cur = st.AttemptStarted
	}
	title := fmt.Sprintf("%s: %s", n, st.Status)
	if st.Attempt > 0 {
		title = fmt.Sprintf("%s: attempt %d, %s", n, st.Attempt, st.Status)
	}
	title += fmt.Sprintf(", %s", stop.Sub(cur).Round(time.Millisecond))
	if open {
		title += " so far"
	}
	if st.Error != "" {
		title += " — " + st.Error
	}
	return append(segs, timelineSeg{From: cur, To: stop, Class: cls, Title: title})
}

// minAttemptPx is the narrowest an attempt (or a step without attempts)
// is drawn, so that a short one is visible on a long timeline.
const minAttemptPx = 6.0

// timelineRows builds the rows of inst's timeline as of now.
func timelineRows(inst *workflow.Instance, now time.Time) []timelineRow {
	names := make([]string, 0, len(inst.Steps))
	for n := range inst.Steps {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := inst.Steps[names[i]], inst.Steps[names[j]]
		if !a.Started.Equal(b.Started) {
			return a.Started.Before(b.Started)
		}
		return names[i] < names[j]
	})
	end := inst.Ended
	if end.IsZero() {
		end = now
	}
	rows := make([]timelineRow, 0, len(names)+1)
	byStep := map[string]int{}
	for _, n := range names {
		st := inst.Steps[n]
		r := timelineRow{Step: n, Label: n, Attempt: st.Attempt}
		stop, open := st.Ended, false
		if stop.IsZero() {
			stop, open = end, true
		}
		cls := string(st.Status)
		if open && !inst.Status.Terminal() {
			cls += " open"
		}
		if segs, ok := attemptSegs(n, st, stop, open && !inst.Status.Terminal()); ok {
			r.Segs = segs
		} else {
			r.Segs = stepSegs(n, st, stop, cls, open && !inst.Status.Terminal())
		}
		if st.Attempt > 1 {
			r.Label = fmt.Sprintf("%s ×%d", n, st.Attempt)
		}
		byStep[n] = len(rows)
		rows = append(rows, r)
	}
	var instanceMarks []timelineMark
	ids := make([]string, 0, len(inst.Timers))
	for id := range inst.Timers {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		at := inst.Timers[id]
		kind, step, attempt := parseTimer(id)
		m := timelineMark{At: at, Kind: kind, Title: fmt.Sprintf("%s timer due %s", kind, at.Format(time.RFC3339))}
		switch kind {
		case "retry":
			m.Title = fmt.Sprintf("%s: attempt %d due %s", step, attempt, at.Format(time.RFC3339))
		case "timeout":
			m.Title = fmt.Sprintf("%s: attempt %d times out %s", step, attempt, at.Format(time.RFC3339))
		}
		if i, ok := byStep[step]; ok {
			rows[i].Marks = append(rows[i].Marks, m)
		} else {
			instanceMarks = append(instanceMarks, m)
		}
	}
	if len(instanceMarks) > 0 {
		rows = append(rows, timelineRow{Step: "", Label: "(instance)", Marks: instanceMarks})
	}
	return rows
}

// Timeline geometry, in SVG units.
const (
	tlLabelW = 170
	tlBarW   = 680
	tlRowH   = 26
	tlTop    = 24
	tlPad    = 8
)

// timelineSVG draws inst's timeline as of now.
func timelineSVG(inst *workflow.Instance, now time.Time) template.HTML {
	rows := timelineRows(inst, now)
	t0 := inst.Created
	t1 := inst.Ended
	if t1.IsZero() {
		t1 = now
	}
	for _, r := range rows {
		for _, s := range r.Segs {
			if s.From.Before(t0) {
				t0 = s.From
			}
			if s.To.After(t1) {
				t1 = s.To
			}
		}
		for _, m := range r.Marks {
			if m.At.After(t1) {
				t1 = m.At
			}
		}
	}
	span := t1.Sub(t0)
	if span <= 0 {
		span = time.Millisecond
	}
	x := func(t time.Time) float64 { return tlLabelW + float64(tlBarW)*float64(t.Sub(t0))/float64(span) }
	w := tlLabelW + tlBarW + tlPad*2
	h := tlTop + len(rows)*tlRowH + tlPad
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="timeline" id="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="timeline of the steps of %s">`, w, h, w, h, esc(inst.ID))
	b.WriteString(`<defs><pattern id="hatch" patternUnits="userSpaceOnUse" width="6" height="6" patternTransform="rotate(45)"><rect width="3" height="6" class="hatch"/></pattern></defs>`)
	// Axis: five ticks, times relative to the start.
	for i := 0; i <= 4; i++ {
		at := t0.Add(span * time.Duration(i) / 4)
		px := x(at)
		fmt.Fprintf(&b, `<g class="tick"><line x1="%.1f" y1="%d" x2="%.1f" y2="%d"/><text x="%.1f" y="%d" text-anchor="%s">+%s</text></g>`,
			px, tlTop-6, px, h-tlPad, px, tlTop-10, anchor(i), at.Sub(t0).Round(roundTo(span)))
	}
	if !inst.Status.Terminal() && now.After(t0) && !now.After(t1) {
		px := x(now)
		fmt.Fprintf(&b, `<g class="now"><title>now</title><line x1="%.1f" y1="%d" x2="%.1f" y2="%d"/></g>`, px, tlTop-6, px, h-tlPad)
	}
	for i, r := range rows {
		y := tlTop + i*tlRowH
		fmt.Fprintf(&b, `<g class="row" data-step="%s">`, esc(r.Step))
		fmt.Fprintf(&b, `<text class="label" x="%d" y="%d">%s</text>`, tlPad, y+tlRowH/2+4, esc(shorten(r.Label, 24)))
		// Backoff first, attempts over it: an attempt of a few
		// milliseconds is drawn wider than it lasted (minAttemptPx), and
		// must stay visible next to the backoff that follows it.
		for _, retrying := range []bool{true, false} {
			for _, s := range r.Segs {
				if strings.HasPrefix(s.Class, "retrying") != retrying {
					continue
				}
				x1, x2 := x(s.From), x(s.To)
				wide := 2.0
				if !retrying {
					wide = minAttemptPx
				}
				fmt.Fprintf(&b, `<rect class="seg %s" x="%.1f" y="%d" width="%.1f" height="%d" rx="3"><title>%s</title></rect>`,
					esc(s.Class), x1, y+4, max(x2-x1, wide), tlRowH-8, esc(s.Title))
			}
		}
		for _, m := range r.Marks {
			px, cy := x(m.At), y+tlRowH/2
			fmt.Fprintf(&b, `<path class="mark %s" d="M%.1f,%d l6,6 l-6,6 l-6,-6 z"><title>%s</title></path>`, esc(m.Kind), px, cy-6, esc(m.Title))
		}
		b.WriteString(`</g>`)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) //nolint:gosec // every user string is escaped by esc
}

func anchor(i int) string {
	switch i {
	case 0:
		return "start"
	case 4:
		return "end"
	}
	return "middle"
}

// roundTo is a tick precision suited to span.
func roundTo(span time.Duration) time.Duration {
	switch {
	case span < 10*time.Millisecond:
		return 10 * time.Microsecond
	case span < 10*time.Second:
		return time.Millisecond
	case span < 10*time.Minute:
		return 100 * time.Millisecond
	}
	return time.Second
}

// timelineTable lists the steps in the timeline's order.
func timelineTable(inst *workflow.Instance) []TimelineRow {
	rows := timelineRows(inst, time.Time{})
	out := make([]TimelineRow, 0, len(rows))
	for _, r := range rows {
		st, ok := inst.Steps[r.Step]
		if !ok {
			continue
		}
		tr := TimelineRow{Step: r.Step, Status: string(st.Status), Attempt: st.Attempt, Started: st.Started, Ended: st.Ended, AttemptStarted: st.AttemptStarted, Error: st.Error, Took: "-"}
		if !st.Ended.IsZero() {
			tr.Took = st.Ended.Sub(st.Started).Round(time.Millisecond).String()
		}
		out = append(out, tr)
	}
	return out
}
