package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetflow/jetflow/internal/cli"
	"github.com/jetflow/jetflow/internal/run"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/security"
	"github.com/jetflow/jetflow/tasktoken"
	"github.com/jetflow/jetflow/workflow"
)

func provisionCmd(g *globals) *cobra.Command {
	var (
		replicas      int
		ackWait       time.Duration
		workerAckWait time.Duration
		taskTypes     string
		defsDir       string
	)
	cmd := &cobra.Command{
		Use:   "provision",
		Short: "Create or update every stream, bucket and consumer (run once, as admin)",
		Long: `Creates or updates jetflow's streams, buckets and the dispatchers'
consumers; registers the definitions in --definitions; makes the trigger
stream capture every registered definition's trigger subject; and creates
the task consumer of every task type the registered definitions use, plus
--task-types. Run it with admin credentials before starting dispatchers and
workers whose NATS users may not provision, and again after registering
definitions with new trigger subjects or task types.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, err := g.connect(ctx, jetstream.InboxPrefixAdmin, jetstream.Config{
				Name: "jetflow-provision", Replicas: replicas, DispatcherAckWait: ackWait, WorkerAckWait: workerAckWait,
			})
			if err != nil {
				return err
			}
			defer c.Close()
			if err := c.Provision(ctx); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "provisioned streams %s, %s, %s, %s and buckets %s, %s, %s, %s\n",
				jetstream.StreamTriggers, jetstream.StreamEvents, jetstream.StreamTasks, jetstream.StreamDLQ,
				jetstream.BucketDefinitions, jetstream.BucketInstances, jetstream.BucketData, jetstream.BucketEffects)
			if defsDir != "" {
				if err := run.RegisterDir(ctx, c, defsDir); err != nil {
					return err
				}
			}
			return provisionForDefinitions(ctx, c, out, run.SplitList(taskTypes))
		},
	}
	f := cmd.Flags()
	f.IntVar(&replicas, "replicas", 1, "replicas of streams and buckets (3 on a cluster)")
	f.DurationVar(&ackWait, "ack-wait", 30*time.Second, "the dispatcher consumers' AckWait: how soon events held by a crashed dispatcher are redelivered")
	f.DurationVar(&workerAckWait, "worker-ack-wait", 30*time.Second, "the task consumers' AckWait; running handlers extend it with heartbeats")
	f.StringVar(&taskTypes, "task-types", "", "comma-separated task types to create consumers for, besides those of the registered definitions")
	f.StringVar(&defsDir, "definitions", "", "register every *.yaml, *.yml and *.json definition in this directory first")
	// The same settings as the dispatcher's, by the same variables.
	cli.BindEnv(f)
	return cmd
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func securityCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "security",
		Short: "Generate NATS users, permissions and certificates for each jetflow role",
		Long: `Roles: admin (provisions), dispatcher, worker (optionally limited to some
task types), producer (publishes on trigger subjects only) and operator (the
CLI's reads, plus start, cancel and signal). See docs/security.md.`,
	}
	cmd.AddCommand(securityInitCmd(), securityPermissionsCmd(), securityTokenKeyCmd())
	return cmd
}

// scopeFlags are the flags that narrow the worker and producer roles.
type scopeFlags struct {
	taskTypes, triggerSubjects, defsDir string
}

func (s *scopeFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&s.taskTypes, "task-types", "", "limit the worker to these comma-separated task types (default: all)")
	cmd.Flags().StringVar(&s.triggerSubjects, "trigger-subjects", "", "comma-separated subjects the producer publishes on")
	cmd.Flags().StringVar(&s.defsDir, "definitions", "", "take the trigger subjects (and, without --task-types, the task types) from the definitions in this directory")
}

func (s *scopeFlags) scope() (security.Scope, error) {
	var sc security.Scope
	if s.defsDir != "" {
		defs, err := readDefinitions(s.defsDir)
		if err != nil {
			return sc, err
		}
		sc = security.ScopeOf(defs)
	}
	if types := run.SplitList(s.taskTypes); len(types) > 0 {
		sc.TaskTypes = types
	}
	for _, subj := range run.SplitList(s.triggerSubjects) {
		if !contains(sc.TriggerSubjects, subj) {
			sc.TriggerSubjects = append(sc.TriggerSubjects, subj)
		}
	}
	return sc, sc.Validate()
}

func readDefinitions(dir string) ([]*workflow.Definition, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("definitions: %w", err)
	}
	var defs []*workflow.Definition
	for _, e := range entries {
		ext := strings.ToLower(filepath.Ext(e.Name()))
		if e.IsDir() || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
			continue
		}
		def, _, err := readDefinition(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		defs = append(defs, def)
	}
	return defs, nil
}

func securityInitCmd() *cobra.Command {
	var (
		s        scopeFlags
		dir      string
		withTLS  bool
		tlsHosts string
		account  string
		force    bool
		srvDir   string
	)
	cmd := &cobra.Command{
		Use:   "init --dir DIR",
		Short: "Write a NATS server config with one nkey user per role, their seeds and (--tls) certificates",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return errors.New("--dir is required")
			}
			sc, err := s.scope()
			if err != nil {
				return err
			}
			res, err := security.Init(security.InitConfig{Dir: dir, ServerDir: srvDir, Account: account, Scope: sc, TLS: withTLS, TLSHosts: run.SplitList(tlsHosts), Force: force})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for _, f := range res.Files {
				fmt.Fprintf(out, "wrote %s\n", f)
			}
			for _, w := range res.Warnings {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s\n", w)
			}
			conf := filepath.Join(res.Dir, security.ServerConfigFile)
			tlsFlags := func(r security.Role) string {
				if !withTLS {
					return ""
				}
				return fmt.Sprintf(" --tls-ca %s --tls-cert %s --tls-key %s", filepath.Join(res.Dir, security.CAFile),
					filepath.Join(res.Dir, security.CertFile(r)), filepath.Join(res.Dir, security.KeyFile(r)))
			}
			seed := func(r security.Role) string { return filepath.Join(res.Dir, security.SeedFile(r)) }
			url := "nats://127.0.0.1:4222"
			if withTLS {
				url = "tls://127.0.0.1:4222"
			}
			fmt.Fprintf(out, `
Next:
  dispatcher --server-config %s --nkey %s%s
  jetflow provision --nats-url %s --nkey %s%s --definitions DIR
  worker --nats-url %s --nkey %s%s
`, conf, seed(security.Admin), tlsFlags(security.Admin), url, seed(security.Admin), tlsFlags(security.Admin), url, seed(security.Worker), tlsFlags(security.Worker))
			fmt.Fprintf(out, "The embedded server's dispatcher above connects in-process as admin; with a separate nats-server, run dispatchers with %s.\n", seed(security.Dispatcher))
			return nil
		},
	}
	s.register(cmd)
	cmd.Flags().StringVar(&dir, "dir", "", "directory to write into (created if missing)")
	cmd.Flags().BoolVar(&withTLS, "tls", false, "also write a CA, a server certificate and a client certificate per role, and require verified client certificates")
	cmd.Flags().StringVar(&tlsHosts, "tls-hosts", "", "comma-separated host names and addresses of the server certificate (default localhost,127.0.0.1,::1)")
	cmd.Flags().StringVar(&account, "account", "JETFLOW", "NATS account that holds jetflow")
	cmd.Flags().StringVar(&srvDir, "server-dir", "", "where the NATS server finds these files, for the paths in nats-server.conf (e.g. where a container mounts --dir); default --dir")
	cmd.Flags().BoolVar(&force, "force", false, "replace existing files (new keys: every process needs its new seed)")
	return cmd
}

func securityPermissionsCmd() *cobra.Command {
	var (
		s       scopeFlags
		role    string
		format  string
		account string
		user    string
	)
	cmd := &cobra.Command{
		Use:   "permissions --role ROLE",
		Short: "Print one role's NATS permissions (server config block, nsc command or JSON)",
		Long: `Prints the permissions of one role, for people who manage their own
server config, accounts or JWTs: --format conf is a user's permissions
block for a NATS server config; --format nsc is an nsc command that sets
them on a user of an operator-mode account (Synadia Cloud); --format json
lists them. Clients of the role must take replies under its inbox prefix
(printed), which jetflow's binaries do by default.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := security.ParseRole(role)
			if err != nil {
				return err
			}
			sc, err := s.scope()
			if err != nil {
				return err
			}
			p, err := security.For(r, sc)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch format {
			case "conf":
				if p.Unrestricted {
					fmt.Fprintf(out, "# %s: no permissions block (every permission in the account)\n", r)
					return nil
				}
				fmt.Fprintf(out, "# %s; inbox prefix %s\n%s", r, p.InboxPrefix, p.Conf(""))
			case "nsc":
				if user == "" {
					user = "jetflow-" + string(r)
				}
				fmt.Fprintf(out, "# %s; inbox prefix %s\n%s", r, p.InboxPrefix, p.NSC(account, user))
			case "json":
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(p)
			default:
				return fmt.Errorf("unknown format %q (use conf, nsc or json)", format)
			}
			return nil
		},
	}
	s.register(cmd)
	cmd.Flags().StringVar(&role, "role", "", "admin, dispatcher, worker, producer or operator")
	cmd.Flags().StringVar(&format, "format", "conf", "conf, nsc or json")
	cmd.Flags().StringVar(&account, "account", "JETFLOW", "account name (nsc)")
	cmd.Flags().StringVar(&user, "nsc-user", "", "user name (nsc; default jetflow-ROLE)")
	return cmd
}

// provisionForDefinitions makes the trigger stream capture the trigger
// subjects of the registered definitions and creates the task consumers
// of their task types and of extraTypes.
func provisionForDefinitions(ctx context.Context, c *jetstream.Client, out io.Writer, extraTypes []string) error {
	defs, err := c.Definitions(ctx)
	if err != nil {
		return err
	}
	scope := security.ScopeOf(defs)
	if len(scope.TriggerSubjects) > 0 {
		if err := c.EnsureTriggerSubjects(ctx, scope.TriggerSubjects...); err != nil {
			return err
		}
		fmt.Fprintf(out, "trigger subjects captured: %s\n", strings.Join(scope.TriggerSubjects, ", "))
	}
	types := scope.TaskTypes
	for _, t := range extraTypes {
		if !contains(types, t) {
			types = append(types, t)
		}
	}
	for _, t := range types {
		if _, err := c.EnsureTaskConsumer(ctx, t); err != nil {
			return err
		}
	}
	if len(types) > 0 {
		fmt.Fprintf(out, "task consumers: %s\n", strings.Join(types, ", "))
	}
	return nil
}

func securityTokenKeyCmd() *cobra.Command {
	var (
		file        string
		rotate      bool
		lead, grace time.Duration
	)
	cmd := &cobra.Command{
		Use:   "token-key --file FILE",
		Short: "Write (or rotate) the task token key file the dispatchers share",
		Long: `Writes a key file for --task-token-key-file (JETFLOW_TASK_TOKEN_KEY_FILE):
dispatchers sign every task with it and accept only results that echo the
task's token. Every dispatcher must read the same file.

--rotate adds a new key to an existing file: it is accepted at once, signs
tasks from --lead on (time for every dispatcher to read the new file; they
re-read it when it changes), and the old key is refused --grace after that
(give it longer than a task can wait in the queue and run). Copy the file
to every dispatcher within the lead. See docs/security.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("--file is required")
			}
			set, err := tokenKeys(file, rotate, lead, grace)
			if err != nil {
				return err
			}
			if err := replaceFile(file, set.Marshal()); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "wrote %s (mode 0600)\n", file)
			printTokenKeys(out, set)
			return nil
		},
	}
	cmd.Flags().StringVar(&file, "file", "", "key file to write")
	cmd.Flags().BoolVar(&rotate, "rotate", false, "add a new key to the existing file and retire its current key")
	cmd.Flags().DurationVar(&lead, "lead", 5*time.Minute, "with --rotate: the new key signs tasks from this long after now")
	cmd.Flags().DurationVar(&grace, "grace", 24*time.Hour, "with --rotate: the old key's tokens are accepted this long after the lead")
	return cmd
}

// tokenKeys returns the key set to write to file: file's keys rotated
// (rotate), or one new key when file does not exist yet.
func tokenKeys(file string, rotate bool, lead, grace time.Duration) (tasktoken.KeySet, error) {
	if rotate {
		ring, err := tasktoken.Load(file)
		if err != nil {
			return tasktoken.KeySet{}, err
		}
		return tasktoken.Rotate(ring.Keys(), time.Now(), lead, grace)
	}
	if _, err := os.Stat(file); err == nil {
		return tasktoken.KeySet{}, fmt.Errorf("%s exists; use --rotate to add a key to it", file)
	}
	k, err := tasktoken.NewKey()
	if err != nil {
		return tasktoken.KeySet{}, err
	}
	return tasktoken.KeySet{Keys: []tasktoken.Key{k}}, nil
}

// replaceFile writes data to a new file (mode 0600) and renames it over
// file, so that a dispatcher never reads half of it.
func replaceFile(file string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), ".task-token-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}

// printTokenKeys lists the keys of set with when each signs and when it
// is refused.
func printTokenKeys(out io.Writer, set tasktoken.KeySet) {
	for _, k := range set.Keys {
		fmt.Fprintf(out, "  key %s", k.ID())
		if !k.NotBefore.IsZero() {
			fmt.Fprintf(out, " signs from %s", k.NotBefore.Format(time.RFC3339))
		}
		if !k.NotAfter.IsZero() {
			fmt.Fprintf(out, " refused from %s", k.NotAfter.Format(time.RFC3339))
		}
		fmt.Fprintln(out)
	}
}
