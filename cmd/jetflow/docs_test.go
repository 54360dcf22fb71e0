package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/internal/cli"
)

// The references generated from the command tree: the table of flags and
// environment variables in docs/configuration.md, and the CLI reference
// in docs/cli/. Regenerate them with
//
//	go generate ./cmd/jetflow
//
// (go test ./cmd/jetflow -run TestGeneratedDocs -update-docs).
var updateDocs = flag.Bool("update-docs", false, "rewrite the generated references in docs/")

const (
	configDoc   = "../../docs/configuration.md"
	cliDocDir   = "../../docs/cli"
	beginMarker = "<!-- BEGIN GENERATED: flags and variables (go generate ./cmd/jetflow); do not edit by hand -->\n"
	endMarker   = "<!-- END GENERATED -->\n"
)

// TestGeneratedDocs fails when the references in docs/ and the commands
// disagree: a flag added, removed or changed without regenerating them.
func TestGeneratedDocs(t *testing.T) {
	t.Run("configuration", func(t *testing.T) {
		doc, err := os.ReadFile(configDoc)
		require.NoError(t, err)
		before, rest, ok := strings.Cut(string(doc), beginMarker)
		require.True(t, ok, "%s has no %q", configDoc, beginMarker)
		_, after, ok := strings.Cut(rest, endMarker)
		require.True(t, ok, "%s has no %q", configDoc, endMarker)
		want := before + beginMarker + flagTables(newRoot()) + endMarker + after
		if *updateDocs {
			require.NoError(t, os.WriteFile(configDoc, []byte(want), 0o644))
			return
		}
		require.Equal(t, want, string(doc), "docs/configuration.md is stale: run go generate ./cmd/jetflow")
	})
	t.Run("cli", func(t *testing.T) {
		dir := t.TempDir()
		root := newRoot()
		noAutoGenTag(root)
		require.NoError(t, doc.GenMarkdownTree(root, dir))
		got := readDir(t, dir)
		// dispatcher, worker and server take none of the client flags
		// (cli.Setup), which cobra/doc lists as inherited.
		for _, name := range []string{"dispatcher", "worker", "server"} {
			f := "jetflow_" + name + ".md"
			before, rest, ok := strings.Cut(got[f], "### Options inherited from parent commands\n\n```\n")
			require.True(t, ok, f)
			_, after, ok := strings.Cut(rest, "```\n\n")
			require.True(t, ok, f)
			got[f] = before + after
		}
		if *updateDocs {
			old, _ := filepath.Glob(filepath.Join(cliDocDir, "*.md"))
			for _, f := range old {
				require.NoError(t, os.Remove(f))
			}
			require.NoError(t, os.MkdirAll(cliDocDir, 0o755))
			for name, body := range got {
				require.NoError(t, os.WriteFile(filepath.Join(cliDocDir, name), []byte(body), 0o644))
			}
			return
		}
		require.Equal(t, got, readDir(t, cliDocDir), "docs/cli is stale: run go generate ./cmd/jetflow")
	})
}

// markdownText escapes what markdown would read as a table cell's end or
// as HTML.
func markdownText(s string) string {
	return strings.NewReplacer("|", "\\|", "<", "&lt;", ">", "&gt;").Replace(s)
}

func noAutoGenTag(c *cobra.Command) {
	c.DisableAutoGenTag = true
	for _, s := range c.Commands() {
		noAutoGenTag(s)
	}
}

func readDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.md"))
	require.NoError(t, err)
	out := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		out[filepath.Base(f)] = string(b)
	}
	return out
}

// flagTables renders, for each command whose flags have variables, a
// table of flag, variables, default and meaning.
func flagTables(root *cobra.Command) string {
	var b bytes.Buffer
	table := func(title, intro string, fs *pflag.FlagSet) {
		fmt.Fprintf(&b, "\n### %s\n\n%s\n\n| Flag | Variables | Default | Meaning |\n|---|---|---|---|\n", title, intro)
		var rows []string
		fs.VisitAll(func(f *pflag.Flag) {
			vars := cli.EnvVars(f)
			if len(vars) == 0 {
				return
			}
			usage := f.Usage
			if i := strings.LastIndex(usage, " (env "); i >= 0 {
				usage = usage[:i]
			}
			def := f.DefValue
			if def == "" || (f.Value.Type() == "bool" && def == "false") {
				def = ""
			} else {
				def = "`" + def + "`"
			}
			rows = append(rows, fmt.Sprintf("| `--%s` | `%s` | %s | %s |\n", f.Name, strings.Join(vars, "`, `"), def,
				markdownText(usage)))
		})
		slices.Sort(rows)
		b.WriteString(strings.Join(rows, ""))
	}
	table("jetflow (client commands)", "The flags every client command shares (`jetflow instances`, `jetflow show`, ...), given before or after the command's name.", root.PersistentFlags())
	for _, name := range []string{"dispatcher", "worker", "server", "provision"} {
		c, _, err := root.Find([]string{name})
		if err != nil {
			panic(err)
		}
		table(c.CommandPath(), "`"+c.CommandPath()+"`: "+c.Short+".", c.LocalFlags())
	}
	return b.String()
}
