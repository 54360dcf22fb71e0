package jetstream

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// NATSContext is a natscli connection context: the JSON file
// ~/.config/nats/context/<name>.json ($XDG_CONFIG_HOME/nats/context when
// XDG_CONFIG_HOME is set) that `nats context add` writes. jetflow reads
// the fields that say where and how to connect; a context that sets
// something jetflow cannot honour (an nsc lookup, a JetStream domain or
// API prefix, a SOCKS proxy, a Windows certificate store, a credential
// from 1Password) is refused rather than half applied.
type NATSContext struct {
	// Name of the context; Path of its file.
	Name, Path string
	// URL is the server list ("" when the context sets none).
	URL string
	// InboxPrefix overrides the role's inbox prefix when set.
	InboxPrefix string
	// Auth holds the credentials and TLS settings.
	Auth Auth
}

// contextFile is the natscli context format (nats-io/jsm.go natscontext).
type contextFile struct {
	URL         string `json:"url"`
	Token       string `json:"token"`
	User        string `json:"user"`
	Password    string `json:"password"`
	Creds       string `json:"creds"`
	NKey        string `json:"nkey"`
	Cert        string `json:"cert"`
	Key         string `json:"key"`
	CA          string `json:"ca"`
	InboxPrefix string `json:"inbox_prefix"`
	TLSFirst    bool   `json:"tls_first"`

	// Settings jetflow does not support; refused when set.
	NSC           string   `json:"nsc"`
	JSDomain      string   `json:"jetstream_domain"`
	JSAPIPrefix   string   `json:"jetstream_api_prefix"`
	JSEventPrefix string   `json:"jetstream_event_prefix"`
	UserJWT       string   `json:"user_jwt"`
	UserSeed      string   `json:"user_seed"`
	SocksProxy    string   `json:"socks_proxy"`
	WinCertStore  string   `json:"windows_cert_store"`
	WinCAMatch    []string `json:"windows_ca_certs_match"`
}

// NATSContextDir is the directory natscli keeps contexts in.
func NATSContextDir() (string, error) {
	root := os.Getenv("XDG_CONFIG_HOME")
	if root == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("nats context: cannot find the home directory: %w", err)
		}
		root = filepath.Join(home, ".config")
	}
	return filepath.Join(root, "nats", "context"), nil
}

// SelectedNATSContext is the name of the context `nats context select`
// chose (the file context.txt next to the context directory), or "".
func SelectedNATSContext() string {
	dir, err := NATSContextDir()
	if err != nil {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(dir), "context.txt"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// ErrNATSContext reports a natscli context that cannot be used.
var ErrNATSContext = errors.New("nats context")

// LoadNATSContext reads the natscli context called name. ~ and $VARS in
// its file paths are expanded, as natscli does.
func LoadNATSContext(name string) (*NATSContext, error) {
	if name == "" || strings.Contains(name, "..") || strings.ContainsRune(name, os.PathSeparator) || strings.ContainsRune(name, '/') {
		return nil, fmt.Errorf("%w: invalid context name %q", ErrNATSContext, name)
	}
	dir, err := NATSContextDir()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, name+".json")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: unknown context %q (no file %s)", ErrNATSContext, name, path)
	}
	if err != nil {
		return nil, fmt.Errorf("%w %q: %w", ErrNATSContext, name, err)
	}
	var f contextFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%w %q: %s: %w", ErrNATSContext, name, path, err)
	}
	for _, u := range []struct {
		field string
		set   bool
	}{
		{"nsc", f.NSC != ""}, {"jetstream_domain", f.JSDomain != ""}, {"jetstream_api_prefix", f.JSAPIPrefix != ""},
		{"jetstream_event_prefix", f.JSEventPrefix != ""}, {"user_jwt", f.UserJWT != ""}, {"user_seed", f.UserSeed != ""},
		{"socks_proxy", f.SocksProxy != ""}, {"windows_cert_store", f.WinCertStore != "" || len(f.WinCAMatch) > 0},
	} {
		if u.set {
			return nil, fmt.Errorf("%w %q sets %s, which jetflow does not support; use a context without it (or --creds/--nkey/--tls-* flags)", ErrNATSContext, name, u.field)
		}
	}
	c := &NATSContext{Name: name, Path: path, URL: f.URL, InboxPrefix: f.InboxPrefix}
	c.Auth.User = f.User
	fields := []struct {
		name string
		ref  string
		dst  *string
		file bool
	}{
		{"password", f.Password, &c.Auth.Password, false}, {"token", f.Token, &c.Auth.Token, false},
		{"creds", f.Creds, &c.Auth.Creds, true}, {"nkey", f.NKey, &c.Auth.NKey, true},
		{"cert", f.Cert, &c.Auth.TLSCert, true}, {"key", f.Key, &c.Auth.TLSKey, true}, {"ca", f.CA, &c.Auth.TLSCA, true},
	}
	for _, fd := range fields {
		if fd.ref == "" {
			continue
		}
		v, err := resolveContextRef(fd.ref, fd.file)
		if err != nil {
			return nil, fmt.Errorf("%w %q: %s: %w", ErrNATSContext, name, fd.name, err)
		}
		*fd.dst = v
	}
	c.Auth.TLSFirst = f.TLSFirst
	return c, nil
}

// resolveContextRef resolves a context value the way natscli does for
// the schemes jetflow supports: a file path (bare or file://, ~ and $VARS
// expanded) for file fields; for secrets a literal, env://NAME or
// file://PATH.
func resolveContextRef(ref string, file bool) (string, error) {
	scheme := ""
	if u, err := url.Parse(ref); err == nil && len(u.Scheme) >= 2 {
		scheme = strings.ToLower(u.Scheme)
	}
	switch {
	case scheme == "" && file:
		return expandPath(ref), nil
	case scheme == "":
		return ref, nil
	case scheme == "file" && file:
		return expandPath(ref[len("file://"):]), nil
	case scheme == "file":
		b, err := os.ReadFile(expandPath(ref[len("file://"):]))
		if err != nil {
			return "", err
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	case scheme == "env" && !file:
		name := ref[len("env://"):]
		v, ok := os.LookupEnv(name)
		if !ok {
			return "", fmt.Errorf("environment variable %s is not set", name)
		}
		return v, nil
	}
	return "", fmt.Errorf("references of scheme %q are not supported by jetflow (use a file path)", scheme)
}

func expandPath(p string) string {
	p = os.ExpandEnv(p)
	if p == "~" || strings.HasPrefix(p, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			p = home + p[1:]
		}
	}
	return p
}
