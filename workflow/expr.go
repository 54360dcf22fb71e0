package workflow

import (
	"fmt"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm"
)

// Expressions use the expr language (github.com/expr-lang/expr). Their
// environment is:
//
//	input           the instance input
//	steps.<name>    {output, status, attempt} of a step that has run
//
// Expressions must be deterministic: now() is rejected. Values read from
// the data bucket have exact numbers (see DecodeJSON); an integer beyond
// 64 bits is a json.Number, copied unchanged but not computed on. A
// result must be storable as JSON (no NaN or ±Inf, at most MaxDepth
// levels deep), or the expression fails.

// maxExprNodes bounds the size of one expression.
const maxExprNodes = 2000

var exprVars = map[string]bool{"input": true, "steps": true}

type compiled struct {
	prog      *vm.Program
	steps     []string // steps whose output the expression reads
	usesInput bool
}

// compile compiles an expression of a step (or "" for the workflow) and
// checks that it only names known variables and steps.
func (d *Definition) compile(step, what, src string) error {
	prog, err := expr.Compile(src, expr.MaxNodes(maxExprNodes), expr.DisableBuiltin("now"))
	if err != nil {
		return d.errf(step, "%s: %v", what, err)
	}
	c := &compiled{prog: prog}
	v := &exprVisitor{declared: map[string]bool{}, callees: map[ast.Node]bool{}}
	root := prog.Node()
	ast.Walk(&root, v)
	for _, id := range v.idents {
		switch {
		case exprVars[id.Value] || v.declared[id.Value] || v.callees[id]:
		default:
			return d.errf(step, "%s: unknown variable %q (use input or steps.<name>.output)", what, id.Value)
		}
	}
	for _, name := range v.calls {
		if name == "now" {
			return d.errf(step, "%s: now() is not allowed; expressions must give the same result when replayed", what)
		}
	}
	seen := map[string]bool{}
	for _, s := range v.steps {
		if _, ok := d.index[s]; !ok {
			return d.errf(step, "%s refers to unknown step %q", what, s)
		}
		if !seen[s] {
			seen[s] = true
			c.steps = append(c.steps, s)
		}
	}
	c.usesInput = v.usesInput
	d.compiled[exprKey(step, what)] = c
	return nil
}

func exprKey(step, what string) string { return step + "\x00" + what }

type exprVisitor struct {
	idents    []*ast.IdentifierNode
	declared  map[string]bool
	callees   map[ast.Node]bool
	calls     []string
	steps     []string
	usesInput bool
}

func (v *exprVisitor) Visit(n *ast.Node) {
	switch node := (*n).(type) {
	case *ast.IdentifierNode:
		v.idents = append(v.idents, node)
		if node.Value == "input" {
			v.usesInput = true
		}
	case *ast.VariableDeclaratorNode:
		v.declared[node.Name] = true
	case *ast.CallNode:
		if id, ok := node.Callee.(*ast.IdentifierNode); ok {
			v.callees[id] = true
			v.calls = append(v.calls, id.Value)
		}
	case *ast.BuiltinNode:
		v.calls = append(v.calls, node.Name)
	case *ast.MemberNode:
		if id, ok := node.Node.(*ast.IdentifierNode); ok && id.Value == "steps" {
			if s, ok := node.Property.(*ast.StringNode); ok {
				v.steps = append(v.steps, s.Value)
			}
		}
	}
}

// Data gives the transition function read access to the values it needs
// to evaluate expressions: the instance input and step outputs. Values are
// stored under write-once keys, so a Data implementation may cache freely.
type Data interface {
	// Load returns the decoded value stored under key, or an error
	// matching ErrNotFound.
	Load(key string) (any, error)
}

// eval evaluates a compiled expression against the instance.
func (d *Definition) eval(step, what string, inst *Instance, data Data) (any, error) {
	c := d.compiled[exprKey(step, what)]
	if c == nil {
		return nil, fmt.Errorf("%w: %s of step %q was not compiled", ErrExpression, what, step)
	}
	env := map[string]any{}
	if c.usesInput {
		v, err := data.Load(inst.InputRef)
		if err != nil {
			return nil, fmt.Errorf("load input %s: %w", inst.InputRef, err)
		}
		env["input"] = v
	}
	steps := map[string]any{}
	for _, name := range c.steps {
		st := inst.Steps[name]
		if st == nil {
			continue // not run (yet): steps.<name> is nil
		}
		m := map[string]any{"status": string(st.Status), "attempt": st.Attempt}
		if st.OutputRef != "" {
			v, err := data.Load(st.OutputRef)
			if err != nil {
				return nil, fmt.Errorf("load output of step %q (%s): %w", name, st.OutputRef, err)
			}
			m["output"] = v
		}
		if st.Error != "" {
			m["error"] = st.Error
		}
		steps[name] = m
	}
	env["steps"] = steps
	out, err := expr.Run(c.prog, env)
	if err == nil {
		// A result may be stored (a step input, the output, bulk items):
		// it must be a value the data bucket accepts and decoders read.
		err = checkComputed(out)
	}
	if err != nil {
		return nil, &ExprError{Step: step, What: what, Err: err}
	}
	return out, nil
}

// ExprError is a run-time expression failure. It matches ErrExpression.
// It is not retried: the same inputs give the same failure.
type ExprError struct {
	Step string
	What string
	Err  error
}

func (e *ExprError) Error() string {
	if e.Step == "" {
		return fmt.Sprintf("evaluating %s: %v", e.What, e.Err)
	}
	return fmt.Sprintf("step %q: evaluating %s: %v", e.Step, e.What, e.Err)
}

func (e *ExprError) Unwrap() error { return e.Err }

// Is matches ErrExpression.
func (e *ExprError) Is(target error) bool { return target == ErrExpression }
