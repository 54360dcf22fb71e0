package workflow

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers match them with errors.Is.
var (
	// ErrInvalidName: a workflow, step or task type name is not usable.
	ErrInvalidName = errors.New("invalid name")
	// ErrInvalidDefinition: a definition failed validation.
	ErrInvalidDefinition = errors.New("invalid definition")
	// ErrConflict: a compare-and-swap lost against a concurrent writer; the
	// caller re-reads and applies the event again.
	ErrConflict = errors.New("revision conflict")
	// ErrNotFound: the instance, definition or data value does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: a write-once key already holds a value.
	ErrExists = errors.New("already exists")
	// ErrExpression: an expression failed to evaluate at run time.
	ErrExpression = errors.New("expression error")
	// ErrTooManyRuns: a duplicate trigger under on_duplicate: rerun found
	// MaxRuns runs of its event key and started none.
	ErrTooManyRuns = errors.New("too many runs of one event key")
)

// DefinitionError names the file, the step and the problem of one
// validation failure. It matches ErrInvalidDefinition.
type DefinitionError struct {
	File    string // source file name, if known
	Step    string // step name, empty for workflow-level problems
	Problem string
}

func (e *DefinitionError) Error() string {
	where := e.File
	if where == "" {
		where = "definition"
	}
	if e.Step != "" {
		return fmt.Sprintf("%s: step %q: %s", where, e.Step, e.Problem)
	}
	return fmt.Sprintf("%s: %s", where, e.Problem)
}

// Is makes every DefinitionError match ErrInvalidDefinition.
func (e *DefinitionError) Is(target error) bool { return target == ErrInvalidDefinition }
