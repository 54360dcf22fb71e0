package security

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// Role is what a NATS user does for jetflow.
type Role string

// The roles. Each runs with the least NATS permissions its job needs.
const (
	// Admin provisions streams, consumers and buckets, registers
	// definitions and maintains the system (purges, deletions). It has
	// every permission in the account; keep its seed offline and use it
	// for `jetflow provision`, `jetflow register` and the nats CLI.
	Admin Role = "admin"
	// Dispatcher runs the dispatcher: it consumes triggers and events,
	// owns instance state and publishes tasks, timers and child starts.
	Dispatcher Role = "dispatcher"
	// Worker runs task handlers of some or all task types: it pulls
	// tasks, reads their inputs, writes their outputs and publishes
	// results.
	Worker Role = "worker"
	// Producer publishes events on trigger subjects, and nothing else.
	Producer Role = "producer"
	// Operator runs the CLI's read commands and cancel, signal and
	// start. It cannot register definitions: a definition is code (its
	// tasks see every input), so registering one is an admin's act.
	Operator Role = "operator"
)

// Roles lists every role.
func Roles() []Role { return []Role{Admin, Dispatcher, Worker, Producer, Operator} }

// ParseRole returns the role named s.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles() {
		if string(r) == s {
			return r, nil
		}
	}
	names := make([]string, 0, 5)
	for _, r := range Roles() {
		names = append(names, string(r))
	}
	return "", fmt.Errorf("unknown role %q (use %s)", s, strings.Join(names, ", "))
}

// InboxPrefix is the prefix of the role's reply subjects: its clients
// must connect with it (jetstream.Config.InboxPrefix), and only it may
// subscribe there.
func (r Role) InboxPrefix() string {
	switch r {
	case Admin:
		return jetstream.InboxPrefixAdmin
	case Dispatcher:
		return jetstream.InboxPrefixDispatcher
	case Worker:
		return jetstream.InboxPrefixWorker
	case Producer:
		return jetstream.InboxPrefixProducer
	case Operator:
		return jetstream.InboxPrefixOperator
	}
	return ""
}

// Scope narrows what a role's permissions name.
type Scope struct {
	// TaskTypes limits the worker role to these task types. Default: all.
	TaskTypes []string `json:"task_types,omitempty"`
	// TriggerSubjects are the subjects the producer role publishes on
	// (the trigger subjects of the definitions; wildcards allowed). The
	// producer role needs at least one.
	TriggerSubjects []string `json:"trigger_subjects,omitempty"`
}

// ScopeOf returns the task types and trigger subjects the definitions
// use.
func ScopeOf(defs []*workflow.Definition) Scope {
	var s Scope
	for _, d := range defs {
		if d.Trigger != nil && !slices.Contains(s.TriggerSubjects, d.Trigger.Subject) {
			s.TriggerSubjects = append(s.TriggerSubjects, d.Trigger.Subject)
		}
		for _, st := range d.Steps {
			if st.Kind == workflow.KindTask && !slices.Contains(s.TaskTypes, st.Task) {
				s.TaskTypes = append(s.TaskTypes, st.Task)
			}
		}
	}
	sort.Strings(s.TaskTypes)
	sort.Strings(s.TriggerSubjects)
	return s
}

// Validate reports task types and subjects that cannot be used.
func (s Scope) Validate() error {
	for _, t := range s.TaskTypes {
		if err := workflow.ValidateName("task type", t); err != nil {
			return err
		}
	}
	for _, subj := range s.TriggerSubjects {
		if err := workflow.ValidateSubject(subj, true); err != nil {
			return fmt.Errorf("trigger subject: %w", err)
		}
		if workflow.ReservedSubject(subj) {
			return fmt.Errorf("trigger subject %q is reserved (jetflow.*, $*, _INBOX* and leading wildcards cannot be triggers)", subj)
		}
	}
	return nil
}

// Permissions is a role's NATS permission block: everything its clients
// may publish and subscribe to, allow-listed (anything else is denied).
type Permissions struct {
	Role Role `json:"role"`
	// InboxPrefix is the prefix the role's clients take replies under.
	InboxPrefix string `json:"inbox_prefix"`
	// Publish and Subscribe are the allowed subjects (NATS wildcards).
	Publish   []string `json:"publish"`
	Subscribe []string `json:"subscribe"`
	// Unrestricted is set for the admin, which may do anything in the
	// account (Publish and Subscribe are then ">").
	Unrestricted bool `json:"unrestricted,omitempty"`
}

// ErrNoTriggerSubjects is returned for a producer without trigger
// subjects.
var ErrNoTriggerSubjects = errors.New("the producer role needs the trigger subjects it publishes on (--trigger-subjects or --definitions)")

// JetStream API subjects, one stream or consumer and one verb each
// (named in jetstream/names.go).
var (
	streamInfo   = jetstream.APIStreamInfo
	msgGet       = jetstream.APIMsgGet
	msgDelete    = jetstream.APIMsgDelete
	consumerInfo = jetstream.APIConsumerInfo
	consumerNext = jetstream.APIConsumerNext
	ack          = jetstream.AckSubjects
	consumerList = jetstream.APIConsumerList
)

// announce is what writing a presence record of kind takes (the
// record's key, and the PubAck on the role's inbox).
func announce(kind string) string { return jetstream.KeySubject(jetstream.BucketPresence, kind+".*") }

// watch is what reading a bucket's keys (a KV watch or key listing)
// takes: an ordered consumer on the bucket's stream, created, answered
// (flow control) and deleted when done.
func watch(bucket string) []string {
	s := jetstream.BucketStream(bucket)
	return []string{jetstream.APIConsumerCreate(s), jetstream.FlowControlSubjects(s), jetstream.APIConsumerDelete(s)}
}

// bind is what binding a bucket takes.
func bind(buckets ...string) []string {
	out := make([]string, 0, len(buckets))
	for _, b := range buckets {
		out = append(out, streamInfo(jetstream.BucketStream(b)))
	}
	return out
}

// For returns the permissions of a role. Scope narrows the worker (task
// types) and is required for the producer (trigger subjects).
func For(role Role, scope Scope) (Permissions, error) {
	if err := scope.Validate(); err != nil {
		return Permissions{}, err
	}
	p := Permissions{Role: role, InboxPrefix: role.InboxPrefix(), Subscribe: []string{role.InboxPrefix() + ".>"}}
	const (
		inst, data, defs, effs = jetstream.BucketInstances, jetstream.BucketData, jetstream.BucketDefinitions, jetstream.BucketEffects
	)
	kvInst, kvData, kvDefs, kvEffs := jetstream.BucketStream(inst), jetstream.BucketStream(data), jetstream.BucketStream(defs), jetstream.BucketStream(effs)
	switch role {
	case Admin:
		p.Unrestricted = true
		p.Publish, p.Subscribe = []string{">"}, []string{">"}
	case Dispatcher:
		tr, ev, d, g := jetstream.StreamTriggers, jetstream.StreamEvents, jetstream.ConsumerDispatcher, jetstream.ConsumerTimerGuard
		p.Publish = concat(
			// Bind without provisioning: look up every stream and the
			// dispatcher's consumers.
			[]string{streamInfo(tr), streamInfo(ev), streamInfo(jetstream.StreamTasks), streamInfo(jetstream.StreamDLQ)},
			bind(inst, data, defs, effs),
			// Consume triggers and events; guard the timer subjects
			// (jetstream.GuardTimerSubjects).
			[]string{consumerInfo(tr, d), consumerNext(tr, d), ack(tr, d), consumerInfo(ev, d), consumerNext(ev, d), ack(ev, d)},
			[]string{consumerInfo(ev, g), consumerNext(ev, g), ack(ev, g)},
			// Erase a trigger it dead-lettered (the dead letter keeps it);
			// read and remove tasks of task types no definition uses
			// (the task guard).
			[]string{msgDelete(tr), msgGet(jetstream.StreamTasks), msgDelete(jetstream.StreamTasks)},
			// Read the last event of a debounce window (its input).
			[]string{msgGet(tr)},
			// Instance state: read, create, compare-and-swap; the repair
			// loop watches it.
			[]string{jetstream.BucketSubjects(inst), msgGet(kvInst)}, watch(inst),
			// Inputs, outputs and bulk barriers (write-once), and their
			// recount (stream info with a subject filter).
			[]string{jetstream.BucketSubjects(data), msgGet(kvData)},
			// Definitions: read and watch.
			[]string{msgGet(kvDefs)}, watch(defs),
			// Concurrency slots and rate windows: read, CAS, list.
			bind(jetstream.BucketFlow), []string{jetstream.BucketSubjects(jetstream.BucketFlow), msgGet(jetstream.BucketStream(jetstream.BucketFlow))}, watch(jetstream.BucketFlow),
			// What it publishes: tasks, its own events, timers (message
			// schedules), bulk children, dead letters, completion notices.
			[]string{jetstream.TaskSubjects, jetstream.EventSubjects, jetstream.TimerSubjects, jetstream.StartSubjects,
				jetstream.DLQSubject("trigger"), jetstream.DLQSubject("event"), jetstream.DLQSubject("timer"), jetstream.DLQSubject("task"), jetstream.DoneSubjects},
			// Its presence record (jetflow dispatchers), and the task
			// queues it reads for jetflow_task_backlog.
			bind(jetstream.BucketPresence), []string{announce(jetstream.PresenceDispatcher), consumerList(jetstream.StreamTasks)},
			// Schedules (jetstream/schedules.go): install and remove
			// them, read what is installed, consume their fires, and
			// decide each fire on the schedule's state record.
			[]string{streamInfo(jetstream.StreamSchedules), msgGet(jetstream.StreamSchedules), jetstream.ScheduleSubjects, jetstream.DLQSubject("schedule"),
				consumerInfo(jetstream.StreamSchedules, d), consumerNext(jetstream.StreamSchedules, d), ack(jetstream.StreamSchedules, d)},
			bind(jetstream.BucketSchedules), []string{jetstream.BucketSubjects(jetstream.BucketSchedules), msgGet(jetstream.BucketStream(jetstream.BucketSchedules))},
			// Claims and outcomes of steps marked once: the dispatchers
			// are the only writers of the effects bucket and write them
			// for the workers (jetstream/effectservice.go), after checking
			// the attempt's task token.
			[]string{jetstream.BucketSubjects(effs), msgGet(kvEffs)},
			// Answers to `jetflow stats`, which operators ask, and to the
			// effect requests of workers. Not allow_responses: that would
			// let whoever may send a request choose any reply subject,
			// such as $JS.API.STREAM.DELETE.JETFLOW_TASKS, and have the
			// dispatcher publish there.
			[]string{jetstream.InboxPrefixOperator + ".>", jetstream.InboxPrefixWorker + ".>"},
		)
		p.Subscribe = append(p.Subscribe, jetstream.StatsSubject, jetstream.EffectSubjects)
	case Worker:
		consumers := []string{"*"} // every task consumer
		if len(scope.TaskTypes) > 0 {
			consumers = consumers[:0]
			for _, t := range scope.TaskTypes {
				consumers = append(consumers, jetstream.WorkerConsumer(t))
			}
		}
		p.Publish = bind(inst, data, defs, effs)
		for _, c := range consumers {
			p.Publish = append(p.Publish, consumerInfo(jetstream.StreamTasks, c), consumerNext(jetstream.StreamTasks, c), ack(jetstream.StreamTasks, c))
		}
		p.Publish = concat(p.Publish,
			// Read inputs; write outputs, under their keys only
			// (<instance>.<step>.<attempt>.out, workflow.OutputKey, and
			// with task tokens .out.<tag>, workflow.TokenOutputKey).
			[]string{msgGet(kvData), jetstream.KeySubject(data, "*.*.*.out"), jetstream.KeySubject(data, "*.*.*.out.*")},
			// Steps marked once: ask a dispatcher to claim the effect key
			// and record the outcome (it writes the effects bucket, which
			// the worker may only read: a writer could overwrite any
			// record, since NATS cannot tell a create from a put).
			[]string{jetstream.EffectClaimSubject, jetstream.EffectRecordSubject, msgGet(kvEffs)},
			// Results, on the result subjects only, and dead letters.
			[]string{jetstream.EventKindSubjects(workflow.EventResult), jetstream.DLQSubject("task")},
			// Its presence record (jetflow workers).
			[]string{announce(jetstream.PresenceWorker)},
		)
	case Producer:
		if len(scope.TriggerSubjects) == 0 {
			return Permissions{}, ErrNoTriggerSubjects
		}
		p.Publish = slices.Clone(scope.TriggerSubjects)
	case Operator:
		p.Publish = concat(
			bind(inst, data, defs),
			// Read instances, data and definitions; list keys.
			[]string{msgGet(kvInst), msgGet(kvData), msgGet(kvDefs)}, watch(inst), watch(defs),
			// Read dead letters; replay them (a replay mark, then the
			// message on its source subject: an explicit start, a
			// trigger subject of the scope, or a fire (FireSubjects,
			// below)) and remove them (jetflow dlq
			// replay, purge). Not the stream purge: that takes no
			// per-message permission.
			[]string{streamInfo(jetstream.StreamDLQ), msgGet(jetstream.StreamDLQ), msgDelete(jetstream.StreamDLQ), jetstream.DLQReplayedSubjects},
			scope.TriggerSubjects,
			// Read who is connected (jetflow workers, dispatchers) and the
			// task queues (jetflow explain).
			bind(jetstream.BucketPresence), watch(jetstream.BucketPresence),
			[]string{streamInfo(jetstream.StreamTasks), msgGet(jetstream.StreamTasks), consumerList(jetstream.StreamTasks), consumerInfo(jetstream.StreamTasks, "*")},
			// Schedules: list them (jetflow schedules), pause and resume
			// them (their state records), trigger a run (a manual fire).
			[]string{streamInfo(jetstream.StreamSchedules), msgGet(jetstream.StreamSchedules), jetstream.FireSubjects},
			bind(jetstream.BucketSchedules), []string{jetstream.BucketSubjects(jetstream.BucketSchedules), msgGet(jetstream.BucketStream(jetstream.BucketSchedules))},
			// Pause and resume workflows (jetflow pause): their pause
			// records in the flow bucket, read (and listed) and written
			// by compare-and-swap; the slot and rate records only read.
			bind(jetstream.BucketFlow), []string{"$KV." + jetstream.BucketFlow + ".pause.*", msgGet(jetstream.BucketStream(jetstream.BucketFlow))}, watch(jetstream.BucketFlow),
			// Start, cancel, retry, signal (the payload first, under its key:
			// <instance>.signal.<name>.<id>, workflow.SignalKey), stats.
			[]string{jetstream.StartSubjects, jetstream.EventKindSubjects(workflow.EventCancel), jetstream.EventKindSubjects(workflow.EventSignal),
				jetstream.EventKindSubjects(workflow.EventRetry),
				jetstream.KeySubject(data, "*.signal.*.*"), jetstream.StatsSubject},
			// Ask the server what it may publish (the console shows an
			// action only when its subject is allowed).
			[]string{jetstream.UserInfoSubject},
		)
		p.Subscribe = append(p.Subscribe, jetstream.DoneSubjects)
	default:
		return Permissions{}, fmt.Errorf("unknown role %q", role)
	}
	return p, nil
}

func concat(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		for _, s := range l {
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}
