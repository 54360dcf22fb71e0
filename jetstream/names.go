package jetstream

import (
	"strings"

	"github.com/jetflow/jetflow/workflow"
)

// Streams.
const (
	// StreamTriggers captures trigger subjects (the user's, from
	// definitions) and explicit starts. Limits retention, so
	// Nats-Msg-Id deduplication survives server restarts.
	StreamTriggers = "JETFLOW_TRIGGERS"
	// StreamEvents carries everything that happens to running instances:
	// task results, fired timers, cancellations. Work-queue retention.
	// Timer schedules live here too, because a schedule must target a
	// subject of its own stream.
	StreamEvents = "JETFLOW_EVENTS"
	// StreamTasks holds task pointer messages, one subject per task type.
	// Work-queue retention.
	StreamTasks = "JETFLOW_TASKS"
	// StreamDLQ keeps rejected messages with the reason, for operators.
	StreamDLQ = "JETFLOW_DLQ"
	// StreamSchedules holds the schedules (never consumed, so kept) and
	// their fires (work queue: removed when a dispatcher acks them).
	StreamSchedules = "JETFLOW_SCHEDULES"
)

// KV buckets.
const (
	// BucketDefinitions: key "<workflow>.<version>", value the definition
	// source (YAML or JSON).
	BucketDefinitions = "jetflow_definitions"
	// BucketInstances: key "<instance id>", value the msgpack-encoded
	// instance, updated only by revision compare-and-swap.
	BucketInstances = "jetflow_instances"
	// BucketData: write-once user values — instance inputs, step inputs
	// and outputs, signal payloads — as JSON (msgpack when written by
	// earlier versions; see value.go), under keys that start with the
	// instance id; and empty bulk barriers.
	BucketData = "jetflow_data"
	// BucketEffects: key "<instance id>/<step>" (the step's effect key),
	// value the msgpack-encoded claim, then outcome, of a step marked
	// once: true. Written with Create, then one compare-and-swap.
	BucketEffects = "jetflow_effects"
	// BucketPresence: key "<kind>.<name>" (kind worker or dispatcher),
	// value the JSON record of a running process (Presence), rewritten
	// every few seconds with a per-message TTL. In memory.
	BucketPresence = "jetflow_presence"
	// BucketSchedules: key "<workflow>.<schedule>", value the JSON
	// workflow.ScheduleState, changed only by compare-and-swap.
	BucketSchedules = "jetflow_schedules"
	// BucketFlow holds the flow-control records: "slot.<workflow>.<step or
	// =>.<digest of the key value>" (workflow.SlotRecord, msgpack) and
	// "rate.<workflow>.<step>.<digest>" (workflow.RateRecord). Every change is
	// a compare-and-swap on the key's revision; an emptied slot record is
	// deleted the same way.
	BucketFlow = "jetflow_flow"
)

// Subjects.
const (
	subjectPrefix = workflow.SubjectPrefix // "jetflow."
	startPrefix   = subjectPrefix + "start."
	eventPrefix   = subjectPrefix + "event."
	timerPrefix   = subjectPrefix + "timer."
	taskPrefix    = subjectPrefix + "task."
	dlqPrefix     = subjectPrefix + "dlq."
	// dlqReplayedPrefix + a JETFLOW_DLQ sequence marks that dead
	// letter replayed (jetflow dlq replay).
	dlqReplayedPrefix = dlqPrefix + "replayed."
	donePrefix        = subjectPrefix + "done."
	schedulePrefix    = subjectPrefix + "schedule."
	firePrefix        = subjectPrefix + "fire."
	// detachedPrefix + a stream name is where DetachStream moves a
	// stream's subjects (tests).
	detachedPrefix   = subjectPrefix + "detached."
	StartSubjects    = startPrefix + ">"
	EventSubjects    = eventPrefix + ">"
	TimerSubjects    = timerPrefix + ">"
	TaskSubjects     = taskPrefix + ">"
	DLQSubjects      = dlqPrefix + ">"
	ScheduleSubjects = schedulePrefix + ">"
	FireSubjects     = firePrefix + ">"
	// DLQReplayedSubjects are the replay marks of dead letters.
	DLQReplayedSubjects = dlqReplayedPrefix + "*"
	DoneSubjects        = donePrefix + ">"
	definitionsKeys     = ">"
	// StatsSubject is the core NATS subject on which every dispatcher
	// answers with its counters (JSON). Not stored in any stream.
	StatsSubject = subjectPrefix + "stats"
	// UserInfoSubject is where the NATS server tells a connection its own
	// user, account and permissions (every account imports it). The
	// operator role may ask it: the console shows an action only when the
	// answer says the action's subject may be published.
	UserInfoSubject = "$SYS.REQ.USER.INFO"
	// EffectClaimSubject and EffectRecordSubject are the core NATS
	// subjects (not stored in any stream) of the effect service: with task
	// tokens, a worker asks a dispatcher to claim a once step's effect key
	// and to record its outcome (effectservice.go). EffectSubjects is
	// their wildcard, which the dispatchers serve in one queue group.
	EffectClaimSubject  = subjectPrefix + "effect.claim"
	EffectRecordSubject = subjectPrefix + "effect.record"
	EffectSubjects      = subjectPrefix + "effect.*"
	// EffectQueue is the queue group of the dispatchers on EffectSubjects.
	EffectQueue = "jetflow_dispatchers"
)

// NATS server subjects: KV keys and the JetStream API
// (https://docs.nats.io/reference/reference-protocols/nats_api_reference).
const (
	kvPrefix    = "$KV."
	jsPrefix    = "$JS."
	jsAPIPrefix = jsPrefix + "API."
	// jsAPI is the pattern of every JetStream API request.
	jsAPI = jsAPIPrefix + ">"
)

// KeySubject is the subject of a KV key ("*" and ">" tokens make it a
// pattern over keys).
func KeySubject(bucket, key string) string { return kvPrefix + bucket + "." + key }

// keySubject is KeySubject, for the adapter's own calls.
func keySubject(bucket, key string) string { return KeySubject(bucket, key) }

// JetStream API subjects, one stream or consumer and one verb each.

// APIStreamInfo is the request for a stream's information.
func APIStreamInfo(stream string) string { return jsAPIPrefix + "STREAM.INFO." + stream }

// APIMsgGet is the request for one stored message of a stream.
func APIMsgGet(stream string) string { return jsAPIPrefix + "STREAM.MSG.GET." + stream }

// APIMsgDelete is the request that deletes one message of a stream.
func APIMsgDelete(stream string) string { return jsAPIPrefix + "STREAM.MSG.DELETE." + stream }

// APIDirectGet is the direct-get request of a stream (add ".>" for the
// per-subject form).
func APIDirectGet(stream string) string { return jsAPIPrefix + "DIRECT.GET." + stream }

// APIConsumerInfo is the request for a consumer's information.
func APIConsumerInfo(stream, consumer string) string {
	return jsAPIPrefix + "CONSUMER.INFO." + stream + "." + consumer
}

// APIConsumerNext is a pull request of a consumer.
func APIConsumerNext(stream, consumer string) string {
	return jsAPIPrefix + "CONSUMER.MSG.NEXT." + stream + "." + consumer
}

// APIConsumerList is the request listing a stream's consumers.
func APIConsumerList(stream string) string { return jsAPIPrefix + "CONSUMER.LIST." + stream }

// APIConsumerCreate is the pattern of consumer creations on a stream.
func APIConsumerCreate(stream string) string { return jsAPIPrefix + "CONSUMER.CREATE." + stream + ".>" }

// APIConsumerDelete is the pattern of consumer deletions on a stream.
func APIConsumerDelete(stream string) string { return jsAPIPrefix + "CONSUMER.DELETE." + stream + ".>" }

// AckSubjects is the pattern of acks of a consumer's messages.
func AckSubjects(stream, consumer string) string {
	return jsPrefix + "ACK." + stream + "." + consumer + ".>"
}

// FlowControlSubjects is the pattern of flow-control replies of a
// stream's (ordered) consumers.
func FlowControlSubjects(stream string) string { return jsPrefix + "FC." + stream + ".>" }

// Inbox prefixes: each role's connections take replies on subjects under
// its own prefix (nats.CustomInboxPrefix), so a NATS user may subscribe
// to its role's replies and no others'. The security package puts the
// prefix into each role's permissions; Config.InboxPrefix selects it.
const (
	InboxPrefixAdmin      = "_INBOX_jetflow_admin"
	InboxPrefixDispatcher = "_INBOX_jetflow_dispatcher"
	InboxPrefixWorker     = "_INBOX_jetflow_worker"
	InboxPrefixProducer   = "_INBOX_jetflow_producer"
	InboxPrefixOperator   = "_INBOX_jetflow_operator"
)

// Consumers.
const (
	// ConsumerDispatcher is the durable pull consumer shared by all
	// dispatcher replicas, on StreamTriggers and on StreamEvents.
	ConsumerDispatcher = "dispatcher"
	// ConsumerTimerGuard is the durable on StreamEvents's timer subjects,
	// shared by all dispatcher replicas: it dead-letters what is not a
	// jetflow timer schedule (see Client.GuardTimerSubjects).
	ConsumerTimerGuard = "timer_guard"
	// workerConsumerPrefix + task type is the durable shared by all
	// workers of that task type.
	workerConsumerPrefix = "worker_"
)

// Headers jetflow sets or reads.
const (
	HeaderMsgID         = "Nats-Msg-Id"
	HeaderEventKey      = "Jetflow-Event-Key"
	HeaderContentType   = "Content-Type"
	HeaderReason        = "Jetflow-Reason"
	HeaderSourceSubject = "Jetflow-Source-Subject"
	HeaderSourceStream  = "Jetflow-Source-Stream"
	HeaderSourceSeq     = "Jetflow-Source-Sequence"
	HeaderComponent     = "Jetflow-Component"
	HeaderDeliveries    = "Jetflow-Deliveries"
	// HeaderSourceMsgID is the Nats-Msg-Id of a dead-lettered message.
	HeaderSourceMsgID = "Jetflow-Source-Msg-Id"
	// HeaderPayloadSize, HeaderPayloadSHA256: the length and the SHA-256
	// (hex) of a dead-lettered message's whole payload; the DLQ keeps at
	// most Config.DLQMaxPayload bytes of it, and HeaderPayloadTruncated
	// ("true") says when it kept less than all.
	HeaderPayloadSize      = "Jetflow-Payload-Size"
	HeaderPayloadSHA256    = "Jetflow-Payload-Sha256"
	HeaderPayloadTruncated = "Jetflow-Payload-Truncated"
)

// StartSubject is where an explicit start of a workflow is published.
func StartSubject(workflowName string) string { return startPrefix + workflowName }

// StartedWorkflow returns the workflow an explicit start's subject
// (StartSubject) names; ok is false for any other subject.
func StartedWorkflow(subject string) (name string, ok bool) {
	return strings.CutPrefix(subject, startPrefix)
}

// EventSubject is where events of an instance are published.
func EventSubject(instance string) string { return eventPrefix + instance }

// EventKindSubject is where an event of one kind for an instance is
// published by a client that may publish only that kind: workers publish
// results on "jetflow.event.<instance>.result", operators cancels and
// signals on ".cancel" and ".signal". The dispatcher accepts an event on
// such a subject only if it is of that kind and for that instance, so a
// NATS permission on the subject is a permission on the kind.
func EventKindSubject(instance string, kind workflow.EventKind) string {
	return eventPrefix + instance + "." + string(kind)
}

// EventKindSubjects is the wildcard of EventKindSubject over instances.
func EventKindSubjects(kind workflow.EventKind) string {
	return eventPrefix + "*." + string(kind)
}

// TimerSubject is the schedule subject of one timer of an instance; one
// subject per timer, because a new schedule on a subject replaces the old.
func TimerSubject(instance, timer string) string {
	return timerPrefix + instance + "." + workflow.TimerToken(timer)
}

// DoneSubject is the core NATS subject (not stored in any stream) on
// which the dispatcher announces that an instance finished.
func DoneSubject(workflowName, instance string) string {
	return donePrefix + workflowName + "." + instance
}

// TaskSubject is where tasks of a type are published.
func TaskSubject(taskType string) string { return taskPrefix + taskType }

// BucketStream is the name of the stream behind a KV bucket.
func BucketStream(bucket string) string { return "KV_" + bucket }

// BucketSubjects is the subject wildcard of a KV bucket's keys.
func BucketSubjects(bucket string) string { return KeySubject(bucket, ">") }

// WorkerConsumer is the durable consumer name for a task type.
func WorkerConsumer(taskType string) string { return workerConsumerPrefix + taskType }

// DLQSubject is where a rejected message from a source is recorded.
// source is "trigger", "event" or "task".
func DLQSubject(source string) string { return dlqPrefix + source }

// DefinitionKey is the KV key of one version of a definition.
func DefinitionKey(name string, version int) string {
	return name + "." + itoa(version)
}

func isReserved(subject string) bool { return strings.HasPrefix(subject, subjectPrefix) }
