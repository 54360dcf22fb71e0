package workflow

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Subject prefixes no trigger may use.
const (
	// SubjectPrefix starts every subject jetflow itself uses.
	SubjectPrefix = "jetflow."
	// SystemSubjectPrefix starts the NATS server's own subjects ($JS,
	// $KV, $SYS, ...).
	SystemSubjectPrefix = "$"
	// InboxSubjectPrefix starts reply subjects: nats.go's "_INBOX." and
	// each jetflow role's "_INBOX_jetflow_<role>.".
	InboxSubjectPrefix = "_INBOX"
)

// ReservedSubject reports whether a subject (wildcards allowed) cannot be
// a trigger subject: it is jetflow's (SubjectPrefix), the server's
// (SystemSubjectPrefix) or a reply inbox's (InboxSubjectPrefix), or its
// first token is a wildcard (which would cover all of those).
func ReservedSubject(subject string) bool {
	first, _, _ := strings.Cut(subject, ".")
	return first == "*" || first == ">" ||
		strings.HasPrefix(subject, SubjectPrefix) ||
		strings.HasPrefix(subject, SystemSubjectPrefix) ||
		strings.HasPrefix(subject, InboxSubjectPrefix)
}

// MaxNameLen is the longest workflow, step or task type name accepted.
const MaxNameLen = 64

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// ValidateName reports whether s may be used as a workflow name, step name or
// task type. Names become NATS subject tokens and KV key tokens, so they are
// limited to letters, digits, '-' and '_', at most [MaxNameLen] long.
func ValidateName(kind, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: %s is empty", ErrInvalidName, kind)
	case len(s) > MaxNameLen:
		return fmt.Errorf("%w: %s %q is longer than %d characters", ErrInvalidName, kind, s, MaxNameLen)
	case !nameRE.MatchString(s):
		return fmt.Errorf("%w: %s %q may contain only letters, digits, '-' and '_'", ErrInvalidName, kind, s)
	}
	return nil
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// InstanceID derives the instance id for an event key of a workflow. The
// same (workflow, key) always gives the same id, which is what makes a
// duplicate trigger land on the existing instance instead of a new one.
// The id is "<workflow>-<26 base32 characters of SHA-256(workflow, key)>"
// so it is readable, bounded in length and safe as a subject token.
func InstanceID(workflowName, eventKey string) string {
	return workflowName + "-" + digest(workflowName+"\x00"+eventKey)
}

// RunID is the instance id of run n of an event key under
// trigger.on_duplicate: rerun, where first is the id of run 1
// (InstanceID(workflow, key)): first itself for n <= 1, "<first>-r<n>"
// after. The suffix uses only letters, digits and '-', so the id stays a
// valid KV key and NATS subject token, and it cannot be another event
// key's id: those end in 26 base32 characters, which contain no '-'.
func RunID(first string, n int) string {
	if n <= 1 {
		return first
	}
	return first + "-r" + strconv.Itoa(n)
}

// ChildEventKey is the event key of the child started by a bulk step for
// the item at index.
func ChildEventKey(parent, step string, index int) string {
	return parent + "/" + step + "/" + strconv.Itoa(index)
}

func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return idEncoding.EncodeToString(sum[:16])
}

// Digest returns a short, stable digest of b, used to compare payloads of
// duplicate triggers without storing them twice.
func Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return idEncoding.EncodeToString(sum[:16])
}

// Data keys. Every value written by the engine lives under a key that starts
// with the instance id and is written once.

// InputKey is the key of an instance's input.
func InputKey(instance string) string { return instance + ".in" }

// TriggerInputKey is the key of the input of an instance of a workflow
// with trigger.on_duplicate: rerun, started by the trigger message at
// stream sequence seq. Duplicates that race to start the same run each
// store their own payload, so a run's input is always the payload of the
// trigger it records (Instance.TriggerSeq and InputDigest); under
// InputKey the first write would win even if another duplicate's start
// created the run.
func TriggerInputKey(instance string, seq uint64) string {
	return instance + ".in." + strconv.FormatUint(seq, 10)
}

// StepInputKey is the key of a step's evaluated input mapping.
func StepInputKey(instance, step string) string { return instance + "." + step + ".in" }

// StepRetryInputKey is the key of a step's input mapping evaluated again
// when an operator's retry activates the step anew at attempt.
func StepRetryInputKey(instance, step string, attempt int) string {
	return instance + "." + step + ".in." + strconv.Itoa(attempt)
}

// OutputKey is the key of a step attempt's output.
func OutputKey(instance, step string, attempt int) string {
	return instance + "." + step + "." + strconv.Itoa(attempt) + ".out"
}

// TokenOutputKey is the key of a step attempt's output when tasks carry
// task tokens: OutputKey with a tag derived from the attempt's token, so
// only the worker that received the attempt knows the key. Another NATS
// user allowed to write outputs cannot write this attempt's output before
// it (the first write of a key stands), and the dispatcher accepts a
// result only with its attempt's key (or, for a once step, the
// step's recorded outcome: EarlierOutputKey).
func TokenOutputKey(instance, step string, attempt int, token string) string {
	if token == "" {
		return OutputKey(instance, step, attempt)
	}
	sum := sha256.Sum256([]byte("jetflow output key v1\x00" + token))
	return OutputKey(instance, step, attempt) + "." + hex.EncodeToString(sum[:8])
}

// EarlierOutputKey reports whether ref has the shape of the output key
// of an earlier attempt than attempt of (instance, step) with task
// tokens (TokenOutputKey), and which attempt. A once step that reports
// the outcome an earlier attempt recorded names such a key; the shape
// alone proves nothing (any writer of outputs can write one), so the
// dispatcher accepts it only when it is the step's recorded outcome.
func EarlierOutputKey(ref, instance, step string, attempt int) (int, bool) {
	rest, ok := strings.CutPrefix(ref, instance+"."+step+".")
	if !ok {
		return 0, false
	}
	n, tail, ok := strings.Cut(rest, ".")
	if !ok || !strings.HasPrefix(tail, "out.") || len(tail) != len("out.")+16 {
		return 0, false
	}
	if _, err := hex.DecodeString(tail[len("out."):]); err != nil {
		return 0, false
	}
	a, err := strconv.Atoi(n)
	if err != nil || a < 1 || a >= attempt || strconv.Itoa(a) != n {
		return 0, false
	}
	return a, true
}

// ChildInputKey is the key of the input of a bulk step's child at index.
func ChildInputKey(parent, step string, index int) string {
	return parent + "." + step + ".item." + strconv.Itoa(index)
}

// ChildBarrierKey is the write-once key that lets a child's completion
// count once: "<parent>.<step>.ok.<index>" or "<parent>.<step>.fail.<index>".
func ChildBarrierKey(parent, step string, index int, ok bool) string {
	return ChildBarrierPrefix(parent, step, ok) + strconv.Itoa(index)
}

// ChildBarrierPrefix is the prefix of a bulk step's barrier keys.
func ChildBarrierPrefix(parent, step string, ok bool) string {
	if ok {
		return parent + "." + step + ".ok."
	}
	return parent + "." + step + ".fail."
}

// BulkOutputKey is the key of a bulk step's output (counts and where the
// children are).
func BulkOutputKey(parent, step string) string { return parent + "." + step + ".out" }

// ChildDoneMsgID deduplicates a child's completion notice.
func ChildDoneMsgID(parent, step string, index int) string {
	return "child/" + parent + "/" + step + "/" + strconv.Itoa(index)
}

// ChildInstanceID is the id of a bulk step's child at index.
func ChildInstanceID(childWorkflow, parent, step string, index int) string {
	return InstanceID(childWorkflow, ChildEventKey(parent, step, index))
}

// InstanceOutputKey is the key of an instance's evaluated output expression.
func InstanceOutputKey(instance string) string { return instance + ".out" }

// EffectKey is the idempotency key of a step: the same on every attempt and
// every redelivery, so handlers can pass it to downstream systems.
func EffectKey(instance, step string) string { return instance + "/" + step }

// TaskMsgID is the deduplication id of the task message for one attempt.
func TaskMsgID(instance, step string, attempt int) string {
	return "task/" + instance + "/" + step + "/" + strconv.Itoa(attempt)
}

// ResultMsgID is the deduplication id of the result of one attempt.
func ResultMsgID(instance, step string, attempt int) string {
	return "result/" + instance + "/" + step + "/" + strconv.Itoa(attempt)
}

// Timer ids name what a timer is for; the attempt is part of the id, so a
// timer left over from an earlier attempt never matches the current one.
func retryTimer(step string, attempt int) string {
	return "retry." + step + "." + strconv.Itoa(attempt)
}
func timeoutTimer(step string, attempt int) string {
	return "timeout." + step + "." + strconv.Itoa(attempt)
}

// TimerToken makes a timer id usable as a subject token (timer ids contain
// dots).
func TimerToken(timer string) string { return strings.ReplaceAll(timer, ".", "_") }

func sleepTimer(step string) string { return "sleep." + step + ".1" }
func waitTimer(step string) string  { return "wait." + step + ".1" }

// RecountTimer is the timer id under which a recount of a bulk step's
// counts is scheduled (see EventRecount); not a timer of the instance.
func RecountTimer(step string) string { return "recount." + step + ".0" }

// deadlineTimer is the instance deadline's timer id.
const deadlineTimer = "deadline._.0"

// SignalKey is the data key of a signal's payload; id distinguishes
// signals of the same name.
func SignalKey(instance, name, id string) string { return instance + ".signal." + name + "." + id }
