package security

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/jetflow/jetflow/workflow"
)

// InitConfig configures Init.
type InitConfig struct {
	// Dir receives the files. Required; created if missing.
	Dir string
	// ServerDir is where the server will find the files, for the paths
	// written into the server config (a container that mounts Dir
	// elsewhere). Default: Dir, absolute.
	ServerDir string
	// Account is the NATS account that holds jetflow. Default "JETFLOW".
	Account string
	// Scope limits the worker user to task types and gives the producer
	// user its trigger subjects. Without trigger subjects no producer user
	// is written (Result.Warnings says so).
	Scope Scope
	// TLS also writes a CA, a server certificate and a client certificate
	// per role, and a config that requires TLS and verifies client
	// certificates. Default false.
	TLS bool
	// TLSHosts are the server certificate's host names and addresses.
	// Default: localhost, 127.0.0.1 and ::1.
	TLSHosts []string
	// Force overwrites existing files. Default false: Init refuses to
	// replace keys that may be in use.
	Force bool
	// Now is the time certificates start from. Default time.Now().
	Now time.Time
}

// Files written by Init, relative to InitConfig.Dir.
const (
	ServerConfigFile = "nats-server.conf"
	CAFile           = "ca.pem"
	CAKeyFile        = "ca-key.pem"
	ServerCertFile   = "server.pem"
	ServerKeyFile    = "server-key.pem"
)

// SeedFile is the file of a role's nkey seed (pass it to --nkey).
func SeedFile(r Role) string { return string(r) + ".nk" }

// CertFile and KeyFile are a role's client certificate and key (pass
// them to --tls-cert and --tls-key).
func CertFile(r Role) string { return string(r) + ".pem" }

// KeyFile: see CertFile.
func KeyFile(r Role) string { return string(r) + "-key.pem" }

// Result says what Init wrote.
type Result struct {
	// Dir is InitConfig.Dir, absolute.
	Dir string
	// Files are the paths written.
	Files []string
	// Users maps each role written to its nkey public key.
	Users map[Role]string
	// Warnings are roles left out and why.
	Warnings []string
}

// WithDefaults returns the config with zero fields set to their defaults.
func (cfg InitConfig) WithDefaults() InitConfig {
	if cfg.Account == "" {
		cfg.Account = "JETFLOW"
	}
	if len(cfg.TLSHosts) == 0 {
		cfg.TLSHosts = []string{"localhost", "127.0.0.1", "::1"}
	}
	if cfg.Now.IsZero() {
		cfg.Now = time.Now()
	}
	return cfg
}

// Validate reports a config that cannot work.
func (cfg InitConfig) Validate() error {
	if cfg.Dir == "" {
		return errors.New("security init: a directory is required")
	}
	if err := workflow.ValidateName("account", cfg.Account); err != nil {
		return fmt.Errorf("security init: %w", err)
	}
	return cfg.Scope.Validate()
}

// Init writes a NATS server config with one nkey user per role, each with
// exactly its role's permissions, and one seed file per role; with
// cfg.TLS also a CA and certificates.
func Init(cfg InitConfig) (*Result, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("security init: %w", err)
	}
	res := &Result{Dir: dir, Users: map[Role]string{}}
	serverDir := dir
	if cfg.ServerDir != "" {
		serverDir = cfg.ServerDir
	}
	if !cfg.Force {
		// Refuse before writing anything: a half-replaced set of keys
		// matches no config.
		if err := refuseExisting(dir); err != nil {
			return nil, err
		}
	}
	w := writer{dir: dir, force: cfg.Force, res: res}
	users, err := w.users(cfg.Scope)
	if err != nil {
		return nil, err
	}
	if cfg.TLS {
		if err := w.tls(cfg, users); err != nil {
			return nil, err
		}
	}
	if err := w.write(ServerConfigFile, []byte(serverConfig(cfg, serverDir, users)), 0o600); err != nil {
		return nil, err
	}
	return res, nil
}

// refuseExisting fails when dir holds any file Init writes.
func refuseExisting(dir string) error {
	names := []string{ServerConfigFile, CAFile, CAKeyFile, ServerCertFile, ServerKeyFile}
	for _, r := range Roles() {
		names = append(names, SeedFile(r), CertFile(r), KeyFile(r))
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
			return fmt.Errorf("security init: %s exists; choose another directory or pass --force to replace every file", filepath.Join(dir, n))
		}
	}
	return nil
}

// users makes one nkey user per role with the role's permissions in
// scope and writes its seed file. The producer role is left out, with a
// warning, when scope has no trigger subjects.
func (w writer) users(scope Scope) ([]initUser, error) {
	var users []initUser
	for _, r := range Roles() {
		perm, err := For(r, scope)
		if errors.Is(err, ErrNoTriggerSubjects) {
			w.res.Warnings = append(w.res.Warnings, "no producer user: no trigger subjects were given (--trigger-subjects or --definitions); producers can then not publish")
			continue
		}
		if err != nil {
			return nil, err
		}
		pub, err := w.nkeyUser(r)
		if err != nil {
			return nil, err
		}
		w.res.Users[r] = pub
		users = append(users, initUser{role: r, pub: pub, perm: perm})
	}
	return users, nil
}

// nkeyUser makes a new nkey user for role r, writes its seed file and
// returns its public key.
func (w writer) nkeyUser(r Role) (string, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", err
	}
	seed, err := kp.Seed()
	if err != nil {
		return "", err
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return "", err
	}
	if err := w.write(SeedFile(r), append(seed, '\n'), 0o600); err != nil {
		return "", err
	}
	return pub, nil
}

// serverConfig is the NATS server configuration of Init: the account,
// one user per role with its permissions and, with cfg.TLS, mutual TLS
// with the files in serverDir.
func serverConfig(cfg InitConfig, serverDir string, users []initUser) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# NATS server configuration for jetflow, written by jetflow security init.
#
# Account %[1]s holds jetflow's streams and buckets. Each role is one
# nkey user with exactly the permissions that `+"`jetflow security permissions --role ROLE`"+`
# prints; its seed is ROLE.nk in this directory. Give each process only its
# role's seed (--nkey FILE). Do not set no_auth_user: it would let anyone in.
#
# With the embedded server: dispatcher --server-config %[2]s
# With nats-server: add listen and jetstream { store_dir } as needed.

jetstream: enabled
`, cfg.Account, filepath.Join(serverDir, ServerConfigFile))

	if cfg.TLS {
		fmt.Fprintf(&b, `
# Clients must use TLS and present a certificate signed by the CA.
tls {
  cert_file: %s
  key_file: %s
  ca_file: %s
  verify: true
}
`, strconv.Quote(filepath.Join(serverDir, ServerCertFile)), strconv.Quote(filepath.Join(serverDir, ServerKeyFile)), strconv.Quote(filepath.Join(serverDir, CAFile)))
	}
	fmt.Fprintf(&b, "\naccounts {\n  %s {\n    jetstream: enabled\n    users: [\n", cfg.Account)
	for _, u := range users {
		fmt.Fprintf(&b, "      # %s\n", u.role.comment())
		if u.perm.Unrestricted {
			fmt.Fprintf(&b, "      { nkey: %s }\n", strconv.Quote(u.pub))
			continue
		}
		fmt.Fprintf(&b, "      {\n        nkey: %s\n%s      }\n", strconv.Quote(u.pub), u.perm.Conf("        "))
	}
	b.WriteString("    ]\n  }\n}\n")
	return b.String()
}

type writer struct {
	dir   string
	force bool
	res   *Result
}

func (w writer) write(name string, data []byte, mode os.FileMode) error {
	path := filepath.Join(w.dir, name)
	flag := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if w.force {
		flag = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(path, flag, mode)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("security init: %s exists; choose another directory or pass --force to replace every file", path)
	}
	if err != nil {
		return fmt.Errorf("security init: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("security init: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("security init: %w", err)
	}
	w.res.Files = append(w.res.Files, path)
	return nil
}

// Validity of the certificates Init writes.
const (
	caValidity   = 10 * 365 * 24 * time.Hour
	certValidity = 825 * 24 * time.Hour
)

// tls writes the CA, the server's certificate and one client
// certificate per role.
func (w writer) tls(cfg InitConfig, users []initUser) error {
	ca, err := NewCA("jetflow CA", cfg.Now, caValidity)
	if err != nil {
		return err
	}
	if err := w.write(CAFile, ca.CertPEM, 0o644); err != nil {
		return err
	}
	if err := w.write(CAKeyFile, ca.KeyPEM, 0o600); err != nil {
		return err
	}
	notBefore, notAfter := cfg.Now.Add(-time.Minute), cfg.Now.Add(certValidity)
	srv, err := ca.ServerCert("jetflow NATS server", cfg.TLSHosts, notBefore, notAfter)
	if err != nil {
		return err
	}
	if err := w.write(ServerCertFile, srv.CertPEM, 0o644); err != nil {
		return err
	}
	if err := w.write(ServerKeyFile, srv.KeyPEM, 0o600); err != nil {
		return err
	}
	for _, u := range users {
		c, err := ca.ClientCert("jetflow "+string(u.role), notBefore, notAfter)
		if err != nil {
			return err
		}
		if err := w.write(CertFile(u.role), c.CertPEM, 0o644); err != nil {
			return err
		}
		if err := w.write(KeyFile(u.role), c.KeyPEM, 0o600); err != nil {
			return err
		}
	}
	return nil
}

type initUser struct {
	role Role
	pub  string
	perm Permissions
}
