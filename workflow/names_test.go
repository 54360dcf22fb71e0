package workflow_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/jetflow/jetflow/workflow"
)

func TestValidateName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{name: "letters", in: "order"},
		{name: "mixed", in: "Order_2-b"},
		{name: "digits only", in: "42"},
		{name: "max length", in: strings.Repeat("a", workflow.MaxNameLen)},
		{name: "empty", in: "", wantErr: "step name is empty"},
		{name: "too long", in: strings.Repeat("a", workflow.MaxNameLen+1), wantErr: "is longer than 64 characters"},
		{name: "dot", in: "a.b", wantErr: `"a.b" may contain only letters, digits, '-' and '_'`},
		{name: "space", in: "a b", wantErr: "may contain only"},
		{name: "star", in: "a*", wantErr: "may contain only"},
		{name: "gt", in: ">", wantErr: "may contain only"},
		{name: "slash", in: "a/b", wantErr: "may contain only"},
		{name: "unicode", in: "café", wantErr: "may contain only"},
		{name: "trailing newline", in: "a\n", wantErr: "may contain only"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := workflow.ValidateName("step name", tc.in)
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, workflow.ErrInvalidName)
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

func TestInstanceID(t *testing.T) {
	t.Parallel()
	id := workflow.InstanceID("orders", "o-1")
	require.Equal(t, id, workflow.InstanceID("orders", "o-1"), "deterministic")
	require.True(t, strings.HasPrefix(id, "orders-"))
	require.Len(t, strings.TrimPrefix(id, "orders-"), 26)
	require.NoError(t, workflow.ValidateName("instance id", id), "usable as a subject and key token")

	distinct := map[string]string{}
	for _, in := range [][2]string{
		{"orders", "o-1"}, {"orders", "o-2"}, {"orders2", "o-1"},
		// The separator keeps (workflow, key) pairs apart.
		{"a", "bc"}, {"ab", "c"}, {"orders", ""}, {"orders", "o-1 "},
	} {
		id := workflow.InstanceID(in[0], in[1])
		prev, dup := distinct[id]
		require.False(t, dup, "%v collides with %s", in, prev)
		distinct[id] = in[0] + "/" + in[1]
	}
	require.Len(t, workflow.InstanceID("orders", strings.Repeat("k", 10_000)), len("orders-")+26, "bounded whatever the key")
}

func TestDataKeys(t *testing.T) {
	t.Parallel()
	require.Equal(t, "i.in", workflow.InputKey("i"))
	require.Equal(t, "i.s.in", workflow.StepInputKey("i", "s"))
	require.Equal(t, "i.s.3.out", workflow.OutputKey("i", "s", 3))
	require.Equal(t, "i.out", workflow.InstanceOutputKey("i"))
	require.Equal(t, "i/s", workflow.EffectKey("i", "s"))
	require.Equal(t, "task/i/s/2", workflow.TaskMsgID("i", "s", 2))
	require.Equal(t, "result/i/s/2", workflow.ResultMsgID("i", "s", 2))
	require.Equal(t, "p/s/7", workflow.ChildEventKey("p", "s", 7))
	require.Equal(t, "retry_s_2", workflow.TimerToken("retry.s.2"))
	require.NotEqual(t, workflow.TaskMsgID("i", "s", 1), workflow.TaskMsgID("i", "s", 2), "each attempt is a new message")
	require.Equal(t, workflow.Digest([]byte("x")), workflow.Digest([]byte("x")))
	require.NotEqual(t, workflow.Digest([]byte("x")), workflow.Digest([]byte("y")))
	require.Len(t, workflow.Digest(nil), 26)
}

func TestDuration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    time.Duration
		wantErr string
	}{
		{name: "milliseconds", in: "500ms", want: 500 * time.Millisecond},
		{name: "compound", in: "1h30m", want: 90 * time.Minute},
		{name: "zero", in: "0s"},
		{name: "no unit", in: "30", wantErr: `invalid duration "30": use a number with a unit`},
		{name: "negative", in: "-1s", wantErr: `invalid duration "-1s": must not be negative`},
		{name: "garbage", in: "soon", wantErr: `invalid duration "soon"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var fromJSON workflow.Duration
			jerr := json.Unmarshal([]byte(`"`+tc.in+`"`), &fromJSON)
			var fromYAML struct {
				D workflow.Duration `yaml:"d"`
			}
			yerr := yaml.Unmarshal([]byte("d: "+tc.in), &fromYAML)
			if tc.wantErr != "" {
				require.ErrorContains(t, jerr, tc.wantErr)
				require.ErrorContains(t, yerr, tc.wantErr)
				require.ErrorContains(t, yerr, "line 1")
				return
			}
			require.NoError(t, jerr)
			require.NoError(t, yerr)
			require.Equal(t, tc.want, fromJSON.D())
			require.Equal(t, tc.want, fromYAML.D.D())
		})
	}
}

func TestDurationRoundTrip(t *testing.T) {
	t.Parallel()
	d := workflow.Duration(90 * time.Second)
	require.Equal(t, "1m30s", d.String())

	j, err := json.Marshal(d)
	require.NoError(t, err)
	require.Equal(t, `"1m30s"`, string(j))
	var back workflow.Duration
	require.NoError(t, json.Unmarshal(j, &back))
	require.Equal(t, d, back)

	y, err := yaml.Marshal(map[string]workflow.Duration{"d": d})
	require.NoError(t, err)
	require.Equal(t, "d: 1m30s\n", string(y))
	var yback map[string]workflow.Duration
	require.NoError(t, yaml.Unmarshal(y, &yback))
	require.Equal(t, d, yback["d"])

	require.ErrorContains(t, json.Unmarshal([]byte(`30`), &back), "duration must be a string")
}

func TestStatus(t *testing.T) {
	t.Parallel()
	require.False(t, workflow.StatusRunning.Terminal())
	require.False(t, workflow.Status("").Terminal())
	for _, s := range []workflow.Status{workflow.StatusCompleted, workflow.StatusFailed, workflow.StatusCancelled} {
		require.True(t, s.Terminal(), s)
	}
}

func TestInstanceClone(t *testing.T) {
	t.Parallel()
	require.Nil(t, (*workflow.Instance)(nil).Clone())
	in := &workflow.Instance{
		ID:     "i",
		Status: workflow.StatusRunning,
		Steps:  map[string]*workflow.StepState{"a": {Status: workflow.StepRunning, Attempt: 1}},
		Timers: map[string]time.Time{"retry.a.2": t0},
	}
	c := in.Clone()
	require.Equal(t, in, c)
	c.Steps["a"].Attempt = 2
	c.Steps["b"] = &workflow.StepState{}
	c.Timers["x"] = t0
	require.Equal(t, 1, in.Steps["a"].Attempt)
	require.NotContains(t, in.Steps, "b")
	require.NotContains(t, in.Timers, "x")
}

func TestExprError(t *testing.T) {
	t.Parallel()
	inner := errFoo{}
	e := &workflow.ExprError{Step: "s", What: "input", Err: inner}
	require.EqualError(t, e, `step "s": evaluating input: foo`)
	require.ErrorIs(t, e, workflow.ErrExpression)
	require.ErrorIs(t, e, inner)
	require.EqualError(t, &workflow.ExprError{What: "output", Err: inner}, `evaluating output: foo`)
}

type errFoo struct{}

func (errFoo) Error() string { return "foo" }

func TestReservedSubject(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		subject  string
		reserved bool
	}{
		{"orders.created", false},
		{"orders.*", false},
		{"jetflowish.x", false},
		{"jetflow.start.w", true},
		{"$KV.jetflow_data.x", true},
		{"$SYS.REQ.USER.INFO", true},
		{"_INBOX.abc", true},
		{"_INBOX_jetflow_worker.abc", true},
		{"*", true},
		{">", true},
		{"*.created", true},
	} {
		require.Equal(t, tc.reserved, workflow.ReservedSubject(tc.subject), tc.subject)
	}
}
