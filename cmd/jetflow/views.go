package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// The JSON the read commands print (--json), and `jetflow decode` for an
// instance record. Field names are snake_case and stable; user values
// (inputs, outputs, dead-lettered payloads that are JSON) are embedded as
// JSON. docs/output.md documents them.

// instanceView is an instance as show, wait, start --wait, instances and
// decode print it.
type instanceView struct {
	ID         string          `json:"id"`
	Workflow   string          `json:"workflow"`
	Version    int             `json:"version"`
	EventKey   string          `json:"event_key"`
	Run        int             `json:"run"`
	Status     workflow.Status `json:"status"`
	Error      string          `json:"error,omitempty"`
	Created    time.Time       `json:"created"`
	Updated    time.Time       `json:"updated"`
	Ended      time.Time       `json:"ended,omitzero"`
	Events     uint64          `json:"events"`
	TriggerSeq uint64          `json:"trigger_seq,omitempty"`
	InputRef   string          `json:"input_ref,omitempty"`
	OutputRef  string          `json:"output_ref,omitempty"`
	// Input and Output are the values themselves (show, wait, start
	// --wait; not instances or decode, which read only the record).
	Input       json.RawMessage   `json:"input,omitempty"`
	Output      json.RawMessage   `json:"output,omitempty"`
	Parent      *parentView       `json:"parent,omitempty"`
	Steps       []stepView        `json:"steps"`
	Timers      []timerView       `json:"timers,omitempty"`
	Signals     map[string]string `json:"signals,omitempty"`
	TraceParent string            `json:"traceparent,omitempty"`
}

type parentView struct {
	ID    string `json:"id"`
	Step  string `json:"step"`
	Index int    `json:"index"`
}

type timerView struct {
	ID  string    `json:"id"`
	Due time.Time `json:"due"`
}

// stepView is one step of an instance.
type stepView struct {
	Name           string              `json:"name"`
	Status         workflow.StepStatus `json:"status"`
	Attempt        int                 `json:"attempt,omitempty"`
	AttemptStarted time.Time           `json:"attempt_started,omitzero"`
	Started        time.Time           `json:"started"`
	Ended          time.Time           `json:"ended,omitzero"`
	Error          string              `json:"error,omitempty"`
	InputRef       string              `json:"input_ref,omitempty"`
	OutputRef      string              `json:"output_ref,omitempty"`
	Pending        int                 `json:"pending_branches,omitempty"`
	Attempts       []attemptView       `json:"attempts,omitempty"`
	Bulk           *bulkView           `json:"bulk,omitempty"`
}

// attemptView is one attempt of a task step.
type attemptView struct {
	Attempt int       `json:"attempt"`
	Started time.Time `json:"started"`
	Ended   time.Time `json:"ended,omitzero"`
	Worker  string    `json:"worker,omitempty"`
	Error   string    `json:"error,omitempty"`
}

// bulkView is a bulk step's record of its children.
type bulkView struct {
	Total      int       `json:"total"`
	Dispatched int       `json:"dispatched"`
	Completed  int       `json:"completed"`
	Failed     int       `json:"failed"`
	ChunkFrom  int       `json:"chunk_from"`
	Recounts   int       `json:"recounts,omitempty"`
	Moved      time.Time `json:"moved,omitzero"`
}

// viewInstance is the view of an instance record, steps in the order they
// started.
func viewInstance(in *workflow.Instance) instanceView {
	v := instanceView{ID: in.ID, Workflow: in.Workflow, Version: in.Version, EventKey: in.EventKey, Run: in.RunNumber(),
		Status: in.Status, Error: in.Error, Created: in.Created, Updated: in.Updated, Ended: in.Ended, Events: in.Events,
		TriggerSeq: in.TriggerSeq, InputRef: in.InputRef, OutputRef: in.OutputRef, Signals: in.Signals, TraceParent: in.Trace,
		Steps: []stepView{}}
	if in.Parent != nil {
		v.Parent = &parentView{ID: in.Parent.ID, Step: in.Parent.Step, Index: in.Parent.Index}
	}
	for _, n := range stepOrder(in) {
		v.Steps = append(v.Steps, viewStep(n, in.Steps[n]))
	}
	for id, at := range in.Timers {
		v.Timers = append(v.Timers, timerView{ID: id, Due: at})
	}
	sort.Slice(v.Timers, func(i, j int) bool { return v.Timers[i].Due.Before(v.Timers[j].Due) })
	return v
}

func viewStep(name string, st *workflow.StepState) stepView {
	s := stepView{Name: name, Status: st.Status, Attempt: st.Attempt, AttemptStarted: st.AttemptStarted, Started: st.Started, Ended: st.Ended,
		Error: st.Error, InputRef: st.InputRef, OutputRef: st.OutputRef, Pending: st.Pending}
	for _, a := range attempts(st) {
		s.Attempts = append(s.Attempts, attemptView(a))
	}
	if st.Total > 0 || st.Cursor > 0 {
		s.Bulk = &bulkView{Total: st.Total, Dispatched: st.Cursor, Completed: st.Done, Failed: st.ChildFailed, ChunkFrom: st.ChunkFrom,
			Recounts: st.Recounts, Moved: st.Moved}
	}
	return s
}

// stepOrder lists an instance's steps in the order they started.
func stepOrder(in *workflow.Instance) []string {
	names := make([]string, 0, len(in.Steps))
	for n := range in.Steps {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := in.Steps[names[i]].Started, in.Steps[names[j]].Started
		if a.Equal(b) {
			return names[i] < names[j]
		}
		return a.Before(b)
	})
	return names
}

// withValues adds the instance's input and output to its view.
func withValues(ctx context.Context, c *jetstream.Client, v *instanceView) error {
	var err error
	if v.InputRef != "" {
		if v.Input, err = loadJSON(ctx, c, v.InputRef); err != nil {
			return fmt.Errorf("input of %s: %w", v.ID, err)
		}
	}
	if v.OutputRef != "" {
		if v.Output, err = loadJSON(ctx, c, v.OutputRef); err != nil {
			return fmt.Errorf("output of %s: %w", v.ID, err)
		}
	}
	return nil
}

// loadJSON reads a value of the data bucket as JSON.
func loadJSON(ctx context.Context, c *jetstream.Client, key string) (json.RawMessage, error) {
	b, err := c.DataRaw(ctx, key)
	if err != nil {
		return nil, err
	}
	j, err := jetstream.ValueJSON(b)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(j), nil
}

// deadLetterView is a dead letter as dlq --json prints it: the payload as
// JSON when it is JSON (data), base64 otherwise (data_base64).
type deadLetterView struct {
	Seq           uint64          `json:"seq"`
	Time          time.Time       `json:"time"`
	Subject       string          `json:"subject"`
	Reason        string          `json:"reason"`
	Component     string          `json:"component"`
	SourceSubject string          `json:"source_subject"`
	SourceStream  string          `json:"source_stream,omitempty"`
	SourceSeq     uint64          `json:"source_seq,omitempty"`
	Deliveries    uint64          `json:"deliveries,omitempty"`
	SourceMsgID   string          `json:"source_msg_id,omitempty"`
	EventKey      string          `json:"event_key,omitempty"`
	Size          int             `json:"size"`
	SHA256        string          `json:"sha256,omitempty"`
	Truncated     bool            `json:"truncated"`
	Data          json.RawMessage `json:"data,omitempty"`
	DataBase64    []byte          `json:"data_base64,omitempty"`
}

func viewDeadLetter(d jetstream.DeadLetter) deadLetterView {
	v := deadLetterView{Seq: d.Seq, Time: d.Time, Subject: d.Subject, Reason: d.Reason, Component: d.Component,
		SourceSubject: d.SourceSubject, SourceStream: d.SourceStream, SourceSeq: d.SourceSeq, Deliveries: d.Deliveries,
		SourceMsgID: d.SourceMsgID, EventKey: d.EventKey, Size: d.Size, SHA256: d.SHA256, Truncated: d.Truncated}
	switch {
	case len(d.Data) == 0:
	case !d.Truncated && json.Valid(d.Data):
		v.Data = json.RawMessage(d.Data)
	default:
		v.DataBase64 = d.Data
	}
	return v
}

// attempts lists the attempts of a task step: those that ended, then the
// running one.
func attempts(st *workflow.StepState) []workflow.AttemptRecord {
	out := append([]workflow.AttemptRecord(nil), st.History...)
	if st.Attempt > 0 && (len(out) == 0 || out[len(out)-1].Attempt < st.Attempt) && !st.AttemptStarted.IsZero() {
		out = append(out, workflow.AttemptRecord{Attempt: st.Attempt, Started: st.AttemptStarted})
	}
	return out
}
