// Package cli holds what every jetflow command shares: one rule that gives
// each flag an environment variable, the version, and the main function of
// the binaries. The long-running commands live in packages of their own
// (dispatchercmd, workercmd, servercmd), so a binary links only the
// commands it runs: cmd/worker does not link the embedded NATS server.
package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// EnvPrefix starts every variable a flag reads.
const EnvPrefix = "JETFLOW_"

// Annotations on a flag: the variable it reads (envAnnotation) and the
// variables of other tools read after it (alsoAnnotation, e.g. NATS_URL,
// read by the code that resolves the connection).
const (
	envAnnotation  = "jetflow_env"
	alsoAnnotation = "jetflow_env_also"
)

// EnvName is the variable of a flag: JETFLOW_ and the flag's name in upper
// case with dashes as underscores (--instance-retention:
// JETFLOW_INSTANCE_RETENTION).
func EnvName(flag string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// AlsoEnv records that a flag's value is also read from other variables
// (after its own), so the help and the configuration table name them.
func AlsoEnv(fs *pflag.FlagSet, flag string, names ...string) {
	if err := fs.SetAnnotation(flag, alsoAnnotation, names); err != nil {
		panic(err) // no such flag: a mistake in the command's code
	}
}

// BindEnv gives every flag of fs an environment variable (EnvName) and
// names it in the flag's help. ApplyEnv reads them.
func BindEnv(fs *pflag.FlagSet) {
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden || f.Deprecated != "" {
			return
		}
		if _, ok := f.Annotations[envAnnotation]; ok {
			return
		}
		name := EnvName(f.Name)
		_ = fs.SetAnnotation(f.Name, envAnnotation, []string{name}) // cannot fail: f is in fs
		f.Usage += " (env " + strings.Join(EnvVars(f), ", ") + ")"
	})
}

// EnvVars lists the variables a flag reads, its own first ("" for none).
func EnvVars(f *pflag.Flag) []string {
	own := f.Annotations[envAnnotation]
	if len(own) == 0 {
		return nil
	}
	return append(append([]string(nil), own...), f.Annotations[alsoAnnotation]...)
}

// ApplyEnv sets every bound flag not given on the command line from its
// variable, when that is set and not empty. A value the flag does not
// accept (JETFLOW_SHARDS=abc, JETFLOW_REPAIR_INTERVAL=5) is an error that
// names the variable.
func ApplyEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		own := f.Annotations[envAnnotation]
		if err != nil || f.Changed || len(own) == 0 {
			return
		}
		v, ok := os.LookupEnv(own[0])
		if !ok || v == "" {
			return
		}
		if serr := f.Value.Set(v); serr != nil {
			err = fmt.Errorf("environment variable %s=%q is not a valid --%s (%s): %w", own[0], v, f.Name, f.Value.Type(), serr)
		}
	})
	return err
}

// Version is the module version and the VCS commit the binary was built
// from, as far as the build recorded them.
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, modified, at string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		case "vcs.time":
			at = s.Value
		}
	}
	switch {
	case rev == "":
		v += ", commit unknown (built without VCS information)"
	default:
		v += ", commit " + rev
		if modified == "true" {
			v += " (modified)"
		}
		if at != "" {
			v += " of " + at
		}
	}
	return v + ", " + bi.GoVersion
}

// Setup makes cmd a command in jetflow's style: --version, errors (not
// usage) printed once by Main, and no positional arguments unless cmd
// says otherwise. Every flag of cmd gets an environment variable, applied
// before cmd runs; for its subcommands, the variables of the flags they
// inherit from cmd are applied. cmd takes none of the flags its parents
// declare persistent (the client flags of jetflow for `jetflow
// dispatcher`): its help does not list them and giving one is an error,
// so `dispatcher` and `jetflow dispatcher` are the same command.
func Setup(cmd *cobra.Command) *cobra.Command {
	cmd.Version = Version()
	cmd.SetVersionTemplate("{{.Name}} {{.Version}}\n")
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	if !cmd.HasSubCommands() {
		// A leaf: as a subcommand it shows no inherited flags. (A root
		// keeps cobra's template, whose Global Flags its subcommands
		// show, and its check of unknown commands.)
		if cmd.Args == nil {
			cmd.Args = noArgs
		}
		cmd.SetUsageTemplate(usageTemplate)
	}
	BindEnv(cmd.LocalFlags())
	BindEnv(cmd.PersistentFlags())
	cmd.PersistentPreRunE = func(c *cobra.Command, _ []string) error {
		if c != cmd {
			return ApplyEnv(c.Flags())
		}
		var err error
		local := c.LocalFlags()
		c.InheritedFlags().VisitAll(func(f *pflag.Flag) {
			if err == nil && f.Changed && local.Lookup(f.Name) == nil {
				err = fmt.Errorf("unknown flag: --%s", f.Name)
			}
		})
		if err != nil {
			return err
		}
		return ApplyEnv(c.LocalFlags())
	}
	return cmd
}

// noArgs rejects positional arguments (a flag after one would otherwise
// be easy to miss).
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("%s takes no arguments, got %q (flags start with --; see --help)", cmd.CommandPath(), args)
	}
	return nil
}

// usageTemplate is cobra's, without the flags inherited from parents.
const usageTemplate = `Usage:{{if .Runnable}}
  {{.UseLine}}{{end}}{{if .HasAvailableSubCommands}}
  {{.CommandPath}} [command]{{end}}{{if gt (len .Aliases) 0}}

Aliases:
  {{.NameAndAliases}}{{end}}{{if .HasExample}}

Examples:
{{.Example}}{{end}}{{if .HasAvailableSubCommands}}

Available Commands:{{range .Commands}}{{if (or .IsAvailableCommand (eq .Name "help"))}}
  {{rpad .Name .NamePadding }} {{.Short}}{{end}}{{end}}{{end}}{{if .HasAvailableLocalFlags}}

Flags:
{{.LocalFlags.FlagUsages | trimTrailingWhitespaces}}{{end}}{{if .HasHelpSubCommands}}

Additional help topics:{{range .Commands}}{{if .IsAdditionalHelpTopicCommand}}
  {{rpad .CommandPath .CommandPathPadding}} {{.Short}}{{end}}{{end}}{{end}}{{if .HasAvailableSubCommands}}

Use "{{.CommandPath}} [command] --help" for more information about a command.{{end}}
`

// Main runs cmd as a program until SIGINT or SIGTERM and exits 1 with the
// error, prefixed with the command's name, when it fails.
func Main(cmd *cobra.Command) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cmd.ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, cmd.Name()+":", err)
		os.Exit(1)
	}
}
