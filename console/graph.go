package console

import (
	"fmt"
	"html/template"
	"strings"

	"github.com/jetflow/jetflow/workflow"
)

// A step graph: each step a box, laid out in layers by its distance from
// the start step (breadth first, so loops end), left to right; the
// edges are next, on_failure, a parallel step's branches, a switch's
// cases and default.

// edge kinds (CSS classes of the drawn edges).
const (
	edgeNext    = "next"
	edgeFailure = "failure"
	edgeBranch  = "branch"
	edgeCase    = "case"
)

type graphEdge struct {
	From, To, Kind, Label string
}

type graphNode struct {
	Name, Kind, Detail string
	Layer, Row         int
}

type graphLayout struct {
	Nodes []graphNode
	Edges []graphEdge
	index map[string]int
}

// edges lists a definition's edges, in step order.
func edges(def *workflow.Definition) []graphEdge {
	var out []graphEdge
	add := func(from, to, kind, label string) {
		if to != "" {
			out = append(out, graphEdge{From: from, To: to, Kind: kind, Label: label})
		}
	}
	for _, s := range def.Steps {
		for _, b := range s.Branches {
			add(s.Name, b, edgeBranch, "")
		}
		for _, c := range s.Cases {
			add(s.Name, c.Next, edgeCase, shorten(c.When, 24))
		}
		add(s.Name, s.Default, edgeCase, "default")
		label := ""
		if s.Kind == workflow.KindParallel {
			label = "joined"
		}
		add(s.Name, s.Next, edgeNext, label)
		add(s.Name, s.OnFailure, edgeFailure, "on failure")
	}
	return out
}

// layout places the steps of def.
func layout(def *workflow.Definition) graphLayout {
	g := graphLayout{Edges: edges(def), index: map[string]int{}}
	out := map[string][]string{}
	for _, e := range g.Edges {
		out[e.From] = append(out[e.From], e.To)
	}
	start := def.Start
	if start == "" && len(def.Steps) > 0 {
		start = def.Steps[0].Name
	}
	layer := map[string]int{}
	if start != "" {
		layer[start] = 0
		queue := []string{start}
		for len(queue) > 0 {
			n := queue[0]
			queue = queue[1:]
			for _, m := range out[n] {
				if _, seen := layer[m]; !seen {
					layer[m] = layer[n] + 1
					queue = append(queue, m)
				}
			}
		}
	}
	maxLayer := 0
	for _, l := range layer {
		maxLayer = max(maxLayer, l)
	}
	rows := map[int]int{}
	for _, s := range def.Steps {
		l, ok := layer[s.Name]
		if !ok { // unreachable from the start: a column of its own
			l = maxLayer + 1
		}
		g.index[s.Name] = len(g.Nodes)
		g.Nodes = append(g.Nodes, graphNode{Name: s.Name, Kind: string(s.Kind), Detail: stepDetail(s), Layer: l, Row: rows[l]})
		rows[l]++
	}
	return g
}

// stepDetail is the second line of a step's box.
func stepDetail(s workflow.Step) string {
	switch s.Kind {
	case workflow.KindTask:
		return "task " + s.Task
	case workflow.KindBulk:
		return "bulk of " + s.Workflow
	case workflow.KindSleep:
		return "sleep " + s.Duration.String()
	case workflow.KindWait:
		return "wait " + s.Signal
	}
	return string(s.Kind)
}

func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// Graph geometry, in SVG units.
const (
	nodeW, nodeH = 150, 40
	colGap       = 70
	rowGap       = 22
	graphPad     = 16
)

// graphSVG draws def's steps; status, when not nil, colours each step by
// its state in an instance (a class per status).
func graphSVG(def *workflow.Definition, status map[string]string, id string) template.HTML {
	g := layout(def)
	cols, rows := 0, 0
	for _, n := range g.Nodes {
		cols, rows = max(cols, n.Layer+1), max(rows, n.Row+1)
	}
	w := graphPad*2 + cols*nodeW + max(cols-1, 0)*colGap
	h := graphPad*2 + rows*nodeH + max(rows-1, 0)*rowGap + 30 // room for back edges below
	pos := func(n graphNode) (x, y int) {
		return graphPad + n.Layer*(nodeW+colGap), graphPad + n.Row*(nodeH+rowGap)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="graph" id="%s" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="step graph of %s version %d">`,
		esc(id), w, h, w, h, esc(def.Name), def.Version)
	fmt.Fprintf(&b, `<defs>`)
	for _, k := range []string{edgeNext, edgeFailure, edgeBranch, edgeCase} {
		fmt.Fprintf(&b, `<marker id="%s-arrow-%s" class="arrow %s" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker>`, esc(id), k, k)
	}
	fmt.Fprintf(&b, `</defs>`)
	for _, e := range g.Edges {
		fi, ok1 := g.index[e.From]
		ti, ok2 := g.index[e.To]
		if !ok1 || !ok2 {
			continue
		}
		from, to := g.Nodes[fi], g.Nodes[ti]
		fx, fy := pos(from)
		tx, ty := pos(to)
		var d string
		var lx, ly int
		if to.Layer > from.Layer {
			x1, y1, x2, y2 := fx+nodeW, fy+nodeH/2, tx, ty+nodeH/2
			mx := (x1 + x2) / 2
			d = fmt.Sprintf("M%d,%d C%d,%d %d,%d %d,%d", x1, y1, mx, y1, mx, y2, x2, y2)
			lx, ly = mx, (y1+y2)/2-4
		} else { // back (or same-layer) edge: a loop under the boxes
			x1, y1, x2, y2 := fx+nodeW/2, fy+nodeH, tx+nodeW/2, ty+nodeH
			low := max(y1, y2) + 26
			d = fmt.Sprintf("M%d,%d C%d,%d %d,%d %d,%d", x1, y1, x1, low, x2, low, x2, y2)
			lx, ly = (x1+x2)/2, low-4
		}
		fmt.Fprintf(&b, `<g class="edge %s"><title>%s → %s (%s)</title><path d="%s" marker-end="url(#%s-arrow-%s)"/>`, e.Kind, esc(e.From), esc(e.To), e.Kind, d, esc(id), e.Kind)
		if e.Label != "" {
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`, lx, ly, esc(e.Label))
		}
		fmt.Fprintf(&b, `</g>`)
	}
	for _, n := range g.Nodes {
		x, y := pos(n)
		cls := "node kind-" + n.Kind
		st := ""
		if status != nil {
			st = status[n.Name]
			if st == "" {
				st = "not-reached"
			}
			cls += " st-" + st
		}
		title := n.Name + " (" + n.Detail + ")"
		if st != "" {
			title += ": " + st
		}
		fmt.Fprintf(&b, `<g class="%s" data-step="%s"><title>%s</title><rect x="%d" y="%d" width="%d" height="%d" rx="6"/>`, cls, esc(n.Name), esc(title), x, y, nodeW, nodeH)
		fmt.Fprintf(&b, `<text x="%d" y="%d" class="name">%s</text><text x="%d" y="%d" class="detail">%s</text></g>`,
			x+8, y+16, esc(shorten(n.Name, 20)), x+8, y+32, esc(shorten(n.Detail, 24)))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) //nolint:gosec // every user string is escaped by esc
}

// esc escapes text for SVG/HTML content and attributes.
func esc(s string) string { return template.HTMLEscapeString(s) }
