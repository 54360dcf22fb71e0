package console

import (
	"fmt"
	"html/template"
	"net/url"
	"strings"
	"time"
)

var pageNames = []string{"overview", "workflows", "definition", "instances", "instance", "children", "dlq", "confirm", "replay", "pause", "error"}

var funcs = template.FuncMap{
	"time": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.Local().Format("2006-01-02 15:04:05.000")
	},
	"rfc3339": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339Nano)
	},
	"ago": func(now, t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		d := now.Sub(t)
		if d < 0 {
			return "in " + (-d).Round(time.Second).String()
		}
		return d.Round(time.Second).String() + " ago"
	},
	"rate":  func(v float64) string { return fmt.Sprintf("%.1f/s", v) },
	"path":  url.PathEscape,
	"query": url.QueryEscape,
	"join":  strings.Join,
	"add":   func(a, b int) int { return a + b },
	"sub":   func(a, b int) int { return a - b },
	"stepKind": func(steps []stepData, name string) string {
		for _, s := range steps {
			if s.Name == name {
				return s.Kind
			}
		}
		return ""
	},
}

func parseTemplates() (map[string]*template.Template, error) {
	out := map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console template %s: %w", name, err)
		}
		out[name] = t
	}
	return out, nil
}
