package console

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// basePage is what every page's layout needs.
type basePage struct {
	Title   string
	Nav     string // the highlighted menu entry
	Refresh int    // live refresh period in ms; 0: none
	Now     time.Time
	Done    string // a notice after an action
	Caps    capabilities
}

func (cs *Console) base(r *http.Request, title, nav string) basePage {
	return basePage{Title: title, Nav: nav, Now: cs.cfg.Now(), Done: r.URL.Query().Get("done"), Caps: cs.capabilities(r.Context())}
}

func (cs *Console) refreshMS() int {
	if cs.cfg.Refresh < 0 {
		return 0
	}
	return int(cs.cfg.Refresh / time.Millisecond)
}

func (cs *Console) render(w http.ResponseWriter, r *http.Request, page string, data any) {
	t := cs.pages[page]
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", data); err != nil {
		cs.log.Error().Err(err).Str("page", page).Msg("render")
		http.Error(w, "render "+page+": "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = buf.WriteTo(w)
}

type errorPage struct {
	basePage
	Status int
	Err    string
}

func (cs *Console) fail(w http.ResponseWriter, r *http.Request, status int, err error) {
	p := errorPage{basePage: cs.base(r, http.StatusText(status), ""), Status: status, Err: err.Error()}
	var buf bytes.Buffer
	if e := cs.pages["error"].ExecuteTemplate(&buf, "layout", &p); e != nil {
		http.Error(w, err.Error(), status)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}

// failRead answers a failed read: 404 for what does not exist.
func (cs *Console) failRead(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusBadGateway
	switch {
	case errors.Is(err, workflow.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, jetstream.ErrPermissionDenied):
		status = http.StatusForbidden
	}
	cs.fail(w, r, status, err)
}

// ---- overview

type overviewPage struct {
	basePage
	Rates        rateView
	RatesErr     string
	Queues       []jetstream.TaskQueue
	QueuesErr    string
	DeadLetters  uint64
	DLQErr       string
	Dispatchers  []jetstream.Presence
	Workers      []jetstream.Presence
	PresenceErr  string
	StatsMissing bool
}

func (cs *Console) overview(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	p := overviewPage{basePage: cs.base(r, "Overview", "overview")}
	p.Refresh = cs.refreshMS()
	answers, err := cs.c.CollectStats(ctx, cs.cfg.StatsWait)
	if err != nil {
		p.RatesErr = err.Error()
	} else {
		p.Rates = cs.rates.add(cs.cfg.Now(), decodeStats(answers))
		p.StatsMissing = len(answers) == 0
	}
	if p.Queues, err = cs.c.TaskQueues(ctx); err != nil {
		p.QueuesErr = err.Error()
	}
	if p.DeadLetters, err = cs.c.DeadLetterCount(ctx); err != nil {
		p.DLQErr = err.Error()
	}
	if p.Dispatchers, err = cs.c.Present(ctx, jetstream.PresenceDispatcher); err == nil {
		p.Workers, err = cs.c.Present(ctx, jetstream.PresenceWorker)
	}
	if err != nil {
		p.PresenceErr = err.Error()
	}
	cs.render(w, r, "overview", &p)
}

// ---- workflows

type workflowVersions struct {
	Name     string
	Latest   *workflow.Definition
	Versions []int
	Graph    template.HTML
	// Pause is its pause record (jetflow pause); PauseUnknown: it could
	// not be read.
	Pause        jetstream.PauseState
	PauseUnknown bool
}

type workflowsPage struct {
	basePage
	Workflows []workflowVersions
}

func (cs *Console) workflows(w http.ResponseWriter, r *http.Request) {
	defs, err := cs.c.Definitions(r.Context())
	if err != nil {
		cs.failRead(w, r, err)
		return
	}
	by := map[string]*workflowVersions{}
	for _, d := range defs {
		wv := by[d.Name]
		if wv == nil {
			wv = &workflowVersions{Name: d.Name}
			by[d.Name] = wv
		}
		wv.Versions = append(wv.Versions, d.Version)
		if wv.Latest == nil || d.Version > wv.Latest.Version {
			wv.Latest = d
		}
	}
	p := workflowsPage{basePage: cs.base(r, "Workflows", "workflows")}
	pauses, perr := cs.c.Pauses(r.Context())
	if perr != nil {
		cs.log.Warn().Err(perr).Msg("cannot read the pause records")
	}
	for _, wv := range by {
		wv.Pause, wv.PauseUnknown = pauses[wv.Name], perr != nil
		sort.Sort(sort.Reverse(sort.IntSlice(wv.Versions)))
		wv.Graph = graphSVG(wv.Latest, nil, "g-"+wv.Name)
		p.Workflows = append(p.Workflows, *wv)
	}
	sort.Slice(p.Workflows, func(i, j int) bool { return p.Workflows[i].Name < p.Workflows[j].Name })
	cs.render(w, r, "workflows", &p)
}

type definitionPage struct {
	basePage
	Def      *workflow.Definition
	Graph    template.HTML
	Versions []int
	Steps    []stepView
	Extra    []field // schedules, limits and other settings, when the definition has them
}

type stepView struct {
	workflow.Step
	Detail string
	Edges  []graphEdge
}

type field struct{ Name, Value string }

func (cs *Console) workflowVersion(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := r.PathValue("name")
	v, err := strconv.Atoi(r.PathValue("version"))
	if err != nil || v < 1 {
		cs.fail(w, r, http.StatusBadRequest, fmt.Errorf("version %q is not a positive number", r.PathValue("version")))
		return
	}
	if err := workflow.ValidateName("workflow", name); err != nil {
		cs.fail(w, r, http.StatusBadRequest, err)
		return
	}
	def, err := cs.c.Definition(ctx, name, v)
	if err != nil {
		cs.failRead(w, r, err)
		return
	}
	p := definitionPage{basePage: cs.base(r, name+" v"+strconv.Itoa(v), "workflows"), Def: def, Graph: graphSVG(def, nil, "g-"+name)}
	if defs, err := cs.c.Definitions(ctx); err == nil {
		for _, d := range defs {
			if d.Name == name {
				p.Versions = append(p.Versions, d.Version)
			}
		}
		sort.Sort(sort.Reverse(sort.IntSlice(p.Versions)))
	}
	all := edges(def)
	for _, s := range def.Steps {
		sv := stepView{Step: s, Detail: stepDetail(s)}
		for _, e := range all {
			if e.From == s.Name {
				sv.Edges = append(sv.Edges, e)
			}
		}
		p.Steps = append(p.Steps, sv)
	}
	p.Extra = definitionExtras(def)
	cs.render(w, r, "definition", &p)
}

// definitionExtras lists the definition's settings besides its steps,
// read from its JSON form, so fields added later (schedules, limits)
// show without the console knowing them.
func definitionExtras(def *workflow.Definition) []field {
	var out []field
	if def.Trigger != nil {
		t := "subject " + def.Trigger.Subject + ", key " + def.Trigger.Key
		if def.Trigger.OnDuplicate != "" {
			t += ", on_duplicate " + string(def.Trigger.OnDuplicate)
		}
		out = append(out, field{"trigger", t})
	}
	if def.Deadline > 0 {
		out = append(out, field{"deadline", def.Deadline.String()})
	}
	b, err := json.Marshal(def)
	if err != nil {
		return out
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(b, &m) != nil {
		return out
	}
	known := map[string]bool{"Name": true, "Version": true, "Description": true, "Trigger": true, "Start": true, "Output": true, "Deadline": true, "Steps": true}
	keys := make([]string, 0, len(m))
	for k := range m {
		if !known[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := string(m[k])
		if v == "null" || v == "" || v == `""` || v == "0" || v == "false" || v == "[]" || v == "{}" {
			continue
		}
		out = append(out, field{strings.ToLower(k), shorten(v, 200)})
	}
	return out
}

// ---- instances

type instanceFilter struct {
	Workflow, Status, Key, Since, Until string
	Page                                int
}

type instancesPage struct {
	basePage
	Filter    instanceFilter
	Workflows []string
	Statuses  []string
	Rows      []*workflow.Instance
	Matching  int
	Total     int
	Page      int
	Pages     int
	PrevURL   string
	NextURL   string
	FilterErr string
}

// parseTime reads a filter time: RFC 3339, the browser's datetime-local
// form ("2006-01-02T15:04", local time), a date, or a duration meaning
// that long before now ("1h").
func parseTime(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("time %q: use RFC 3339 (2006-01-02T15:04:05Z), 2006-01-02T15:04, a date, or a duration back from now (1h)", s)
}

// allInstances reads every instance in one pass over the bucket.
func (cs *Console) allInstances(ctx context.Context) ([]*workflow.Instance, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var out []*workflow.Instance
	err := cs.c.WatchInstances(ctx, true, cancel, func(in *workflow.Instance) { out = append(out, in) })
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (cs *Console) instances(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	f := instanceFilter{Workflow: q.Get("workflow"), Status: q.Get("status"), Key: q.Get("key"), Since: q.Get("since"), Until: q.Get("until")}
	f.Page, _ = strconv.Atoi(q.Get("page"))
	f.Page = max(f.Page, 0)
	p := instancesPage{basePage: cs.base(r, "Instances", "instances"), Filter: f,
		Statuses: []string{string(workflow.StatusRunning), string(workflow.StatusCompleted), string(workflow.StatusFailed), string(workflow.StatusCancelled)}}
	now := cs.cfg.Now()
	since, err := parseTime(f.Since, now)
	if err != nil {
		p.FilterErr = err.Error()
	}
	until, err := parseTime(f.Until, now)
	if err != nil {
		p.FilterErr = err.Error()
	}
	if defs, err := cs.c.Definitions(ctx); err == nil {
		seen := map[string]bool{}
		for _, d := range defs {
			if !seen[d.Name] {
				seen[d.Name] = true
				p.Workflows = append(p.Workflows, d.Name)
			}
		}
		sort.Strings(p.Workflows)
	}
	all, err := cs.allInstances(ctx)
	if err != nil {
		cs.failRead(w, r, err)
		return
	}
	p.Total = len(all)
	var rows []*workflow.Instance
	for _, in := range all {
		if (f.Status != "" && string(in.Status) != f.Status) || (f.Workflow != "" && in.Workflow != f.Workflow) ||
			(f.Key != "" && in.EventKey != f.Key) || (!since.IsZero() && in.Created.Before(since)) || (!until.IsZero() && in.Created.After(until)) {
			continue
		}
		rows = append(rows, in)
	}
	sort.Slice(rows, func(i, j int) bool {
		if !rows[i].Created.Equal(rows[j].Created) {
			return rows[i].Created.After(rows[j].Created)
		}
		return rows[i].ID < rows[j].ID
	})
	size := cs.cfg.PageSize
	p.Matching = len(rows)
	p.Pages = max((len(rows)+size-1)/size, 1)
	p.Page = min(f.Page, p.Pages-1)
	from := p.Page * size
	p.Rows = rows[from:min(from+size, len(rows))]
	link := func(page int) string {
		v := url.Values{}
		for k, val := range map[string]string{"workflow": f.Workflow, "status": f.Status, "key": f.Key, "since": f.Since, "until": f.Until} {
			if val != "" {
				v.Set(k, val)
			}
		}
		if page > 0 {
			v.Set("page", strconv.Itoa(page))
		}
		return "/instances?" + v.Encode()
	}
	if p.Page > 0 {
		p.PrevURL = link(p.Page - 1)
	}
	if p.Page+1 < p.Pages {
		p.NextURL = link(p.Page + 1)
	}
	cs.render(w, r, "instances", &p)
}

// ---- one instance

type stepData struct {
	Name, Kind      string
	State           *workflow.StepState
	Input, Output   string // formatted JSON ("" when none or not loaded)
	Bulk            bool
	ChildrenURL     string
	Progress        int // completed + failed children
	DataNotLoaded   bool
	AttemptDuration string
}

type instancePage struct {
	basePage
	Inst        *workflow.Instance
	Rev         uint64
	Duration    string
	Input       string
	Output      string
	Timeline    template.HTML
	Table       []TimelineRow
	Graph       template.HTML
	Steps       []stepData
	Explain     *workflow.Explanation
	ExplainErr  string
	ExplainWarn string
	Timers      []field
	Signals     []string
	Waits       []string
	CanCancel   bool
	CanSignal   bool
	CanRetry    bool
	ParentURL   string
}

// maxStepData is how many steps' inputs and outputs an instance page
// loads.
const maxStepData = 100

func (cs *Console) instance(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id := r.PathValue("id")
	inst, rev, err := cs.c.GetInstance(ctx, id)
	if err != nil {
		cs.failRead(w, r, err)
		return
	}
	now := cs.cfg.Now()
	p := instancePage{basePage: cs.base(r, "Instance "+inst.ID, "instances"), Inst: inst, Rev: rev, Duration: "-"}
	if !inst.Status.Terminal() || p.Done != "" {
		// Running, or an action (a retry) was just requested and the
		// dispatcher may not have applied it yet: follow the instance.
		p.Refresh = cs.refreshMS()
	}
	if !inst.Status.Terminal() {
		p.Duration = now.Sub(inst.Created).Round(time.Millisecond).String() + " so far"
	} else if !inst.Ended.IsZero() {
		p.Duration = inst.Ended.Sub(inst.Created).Round(time.Millisecond).String()
	}
	p.CanCancel = p.Caps.Cancel && !inst.Status.Terminal()
	p.CanSignal = p.Caps.Signal && !inst.Status.Terminal()
	if inst.Parent != nil {
		p.ParentURL = "/instances/" + url.PathEscape(inst.Parent.ID)
	}
	p.Input = cs.loadJSON(ctx, inst.InputRef)
	p.Output = cs.loadJSON(ctx, inst.OutputRef)
	p.Timeline = timelineSVG(inst, now)
	p.Table = timelineTable(inst)
	def, defErr := cs.c.Definition(ctx, inst.Workflow, inst.Version)
	status := map[string]string{}
	for n, st := range inst.Steps {
		status[n] = string(st.Status)
	}
	if defErr == nil {
		p.CanRetry = p.Caps.Retry && retryOffered(inst)
		p.Graph = graphSVG(def, status, "g-instance")
		for _, s := range def.Steps {
			if s.Kind == workflow.KindWait {
				p.Waits = append(p.Waits, s.Signal)
			}
		}
	}
	for i, row := range p.Table {
		st := inst.Steps[row.Step]
		sd := stepData{Name: row.Step, State: st}
		if defErr == nil {
			if s, ok := def.Step(row.Step); ok {
				sd.Kind = string(s.Kind)
				sd.Bulk = s.Kind == workflow.KindBulk
			}
		}
		if sd.Bulk {
			sd.ChildrenURL = "/instances/" + url.PathEscape(inst.ID) + "/children/" + url.PathEscape(row.Step)
			sd.Progress = st.Done + st.ChildFailed
		}
		if i < maxStepData {
			sd.Input = cs.loadJSON(ctx, st.InputRef)
			sd.Output = cs.loadJSON(ctx, st.OutputRef)
		} else {
			sd.DataNotLoaded = st.InputRef != "" || st.OutputRef != ""
		}
		p.Steps = append(p.Steps, sd)
	}
	for tid, at := range inst.Timers {
		p.Timers = append(p.Timers, field{tid, at.Format(time.RFC3339)})
	}
	sort.Slice(p.Timers, func(i, j int) bool { return p.Timers[i].Value < p.Timers[j].Value })
	for name := range inst.Signals {
		p.Signals = append(p.Signals, name)
	}
	sort.Strings(p.Signals)
	if defErr == nil {
		var warn strings.Builder
		x, err := cs.c.Explain(ctx, inst.ID, cs.cfg.Policy, 20, &warn)
		if err != nil {
			p.ExplainErr = err.Error()
		} else {
			p.Explain = &x
		}
		p.ExplainWarn = warn.String()
	} else {
		p.ExplainErr = defErr.Error()
	}
	cs.render(w, r, "instance", &p)
}

// maxPreview bounds the JSON shown for one value.
const maxPreview = 64 << 10

// loadJSON reads a data value and formats it; "" when ref is empty.
func (cs *Console) loadJSON(ctx context.Context, ref string) string {
	if ref == "" {
		return ""
	}
	v, err := cs.c.LoadData(ctx, ref)
	if err != nil {
		return "(cannot read " + ref + ": " + err.Error() + ")"
	}
	return prettyJSON(v)
}

func prettyJSON(v any) string {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Sprint(v)
	}
	if len(b) > maxPreview {
		return string(b[:maxPreview]) + "\n… (cut at 64 KiB)"
	}
	return string(b)
}

// ---- bulk children

type childRow struct {
	Index          int
	ID, Status     string
	Error, Output  string
	NotStarted     bool
	URL            string
	StatusExplains string
}

type childrenPage struct {
	basePage
	Parent          *workflow.Instance
	Step            string
	State           *workflow.StepState
	Rows            []childRow
	Page, Pages     int
	PrevURL         string
	NextURL         string
	From, To, Total int
}

func (cs *Console) children(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	parent, _, err := cs.c.GetInstance(ctx, r.PathValue("id"))
	if err != nil {
		cs.failRead(w, r, err)
		return
	}
	stepName := r.PathValue("step")
	def, err := cs.c.Definition(ctx, parent.Workflow, parent.Version)
	if err != nil {
		cs.failRead(w, r, err)
		return
	}
	step, ok := def.Step(stepName)
	st := parent.Steps[stepName]
	if !ok || step.Kind != workflow.KindBulk || st == nil {
		cs.fail(w, r, http.StatusNotFound, fmt.Errorf("step %q of %s is not a bulk step that has started", stepName, parent.ID))
		return
	}
	size := cs.cfg.PageSize
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	pages := max((st.Cursor+size-1)/size, 1)
	page = min(max(page, 0), pages-1)
	p := childrenPage{basePage: cs.base(r, "Children of "+parent.ID+" / "+stepName, "instances"), Parent: parent, Step: stepName, State: st, Page: page, Pages: pages, Total: st.Total}
	if !parent.Status.Terminal() {
		p.Refresh = cs.refreshMS()
	}
	p.From, p.To = page*size, min(page*size+size, st.Cursor)
	for i := p.From; i < p.To; i++ {
		id := workflow.ChildInstanceID(step.Workflow, parent.ID, stepName, i)
		row := childRow{Index: i, ID: id, Status: "not started", NotStarted: true}
		ch, _, err := cs.c.GetInstance(ctx, id)
		switch {
		case errors.Is(err, workflow.ErrNotFound):
		case err != nil:
			// Not "not started": the child could not be read.
			cs.failRead(w, r, fmt.Errorf("child %s: %w", id, err))
			return
		default:
			row.Status, row.Error, row.NotStarted, row.URL = string(ch.Status), ch.Error, false, "/instances/"+url.PathEscape(id)
			if ch.OutputRef != "" {
				row.Output = cs.outputCell(ctx, ch.OutputRef)
			}
		}
		p.Rows = append(p.Rows, row)
	}
	base := "/instances/" + url.PathEscape(parent.ID) + "/children/" + url.PathEscape(stepName) + "?page="
	if page > 0 {
		p.PrevURL = base + strconv.Itoa(page-1)
	}
	if page+1 < pages {
		p.NextURL = base + strconv.Itoa(page+1)
	}
	cs.render(w, r, "children", &p)
}

// outputCell is a child's output, shortened, for a table cell; when the
// value cannot be read, the cell says so instead of looking empty.
func (cs *Console) outputCell(ctx context.Context, ref string) string {
	v, err := cs.c.LoadData(ctx, ref)
	if err != nil {
		return "(cannot read the output: " + err.Error() + ")"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "(cannot show the output: " + err.Error() + ")"
	}
	return shorten(string(b), 200)
}

// ---- dead letters

type deadLetterView struct {
	jetstream.DeadLetter
	Preview   string
	Binary    bool
	CanReplay bool
}

func viewOf(d jetstream.DeadLetter) deadLetterView {
	v := deadLetterView{DeadLetter: d}
	v.Preview, v.Binary = preview(d.Data)
	return v
}

type dlqPage struct {
	basePage
	Rows  []deadLetterView
	Count uint64
	Limit int
}

// maxDLQPreview bounds a dead letter's payload preview.
const maxDLQPreview = 2048

func (cs *Console) deadLetters(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	if limit <= 0 {
		limit = 200
	}
	limit = min(limit, 5000)
	dls, err := cs.c.DeadLetters(ctx, limit)
	if err != nil {
		cs.failRead(w, r, err)
		return
	}
	p := dlqPage{basePage: cs.base(r, "Dead letters", "dlq"), Limit: limit}
	if n, err := cs.c.DeadLetterCount(ctx); err == nil {
		p.Count = n
	}
	for i := len(dls) - 1; i >= 0; i-- { // newest first
		v := viewOf(dls[i])
		v.CanReplay = p.Caps.mayReplay(dls[i])
		p.Rows = append(p.Rows, v)
	}
	cs.render(w, r, "dlq", &p)
}

// preview formats a payload for reading: indented JSON when it is JSON,
// the text when it is UTF-8, hex otherwise; at most maxDLQPreview bytes.
func preview(b []byte) (string, bool) {
	var out bytes.Buffer
	if json.Valid(b) && json.Indent(&out, b, "", "  ") == nil {
		return cut(out.String()), false
	}
	if utf8.Valid(b) {
		return cut(string(b)), false
	}
	n := min(len(b), maxDLQPreview/2)
	s := fmt.Sprintf("% x", b[:n])
	if n < len(b) {
		s += " …"
	}
	return s, true
}

func cut(s string) string {
	if len(s) <= maxDLQPreview {
		return s
	}
	i := maxDLQPreview
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "\n…"
}
