package jetstream

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
)

// Auth says how a client proves who it is to NATS and how it checks the
// server, with the settings NATS users know from natscli. The zero value
// connects without credentials. At most one of Creds, NKey, User and
// Token may be set. Password and Token are secrets: String never shows
// them, and nothing in jetflow logs them.
type Auth struct {
	// Creds is a credentials file: a user JWT and its nkey seed, as nsc,
	// Synadia Cloud and operator-mode (JWT) accounts issue them.
	Creds string
	// NKey is a file holding a user nkey seed ("SU..."), for servers whose
	// config lists nkey users (what `jetflow security init` writes).
	NKey string
	// User and Password authenticate with a user name and password.
	User, Password string
	// Token authenticates with a token.
	Token string
	// TLSCA is a PEM file of the certificate authorities that sign the
	// server's certificate. Setting it (or a tls:// URL) turns TLS on.
	// Default: the system's roots.
	TLSCA string
	// TLSCert and TLSKey are the client's certificate and key, for servers
	// that verify clients (mutual TLS). Both or neither.
	TLSCert, TLSKey string
	// TLSFirst does the TLS handshake before the server's greeting, for
	// servers configured with handshake_first. Default false.
	TLSFirst bool
}

// Method names the authentication method: "creds", "nkey", "user",
// "token" or "none".
func (a Auth) Method() string {
	switch {
	case a.Creds != "":
		return "creds"
	case a.NKey != "":
		return "nkey"
	case a.User != "":
		return "user"
	case a.Token != "":
		return "token"
	}
	return "none"
}

func (a Auth) methods() []string {
	var m []string
	for _, f := range []struct{ name, v string }{{"creds", a.Creds}, {"nkey", a.NKey}, {"user", a.User}, {"token", a.Token}} {
		if f.v != "" {
			m = append(m, f.name)
		}
	}
	return m
}

// String describes the settings without their secrets, for logs.
func (a Auth) String() string {
	var parts []string
	switch a.Method() {
	case "creds":
		parts = append(parts, "creds "+a.Creds)
	case "nkey":
		parts = append(parts, "nkey seed "+a.NKey)
	case "user":
		parts = append(parts, "user "+a.User+" with password")
	case "token":
		parts = append(parts, "token")
	default:
		parts = append(parts, "no credentials")
	}
	if a.TLSCA != "" {
		parts = append(parts, "tls ca "+a.TLSCA)
	}
	if a.TLSCert != "" {
		parts = append(parts, "tls client cert "+a.TLSCert)
	}
	if a.TLSFirst {
		parts = append(parts, "tls first")
	}
	return strings.Join(parts, ", ")
}

// GoString is String, so %#v does not print secrets either.
func (a Auth) GoString() string { return "jetstream.Auth{" + a.String() + "}" }

// Over returns a with the settings of base that a leaves unset. An
// authentication method in a replaces base's (a --creds flag over a
// context with a user name uses the creds, not both); TLS settings are
// taken one by one.
func (a Auth) Over(base Auth) Auth {
	if a.Method() == "none" {
		a.Creds, a.NKey, a.User, a.Password, a.Token = base.Creds, base.NKey, base.User, base.Password, base.Token
	}
	if a.TLSCA == "" {
		a.TLSCA = base.TLSCA
	}
	if a.TLSCert == "" && a.TLSKey == "" {
		a.TLSCert, a.TLSKey = base.TLSCert, base.TLSKey
	}
	a.TLSFirst = a.TLSFirst || base.TLSFirst
	return a
}

// Validate reports settings that cannot work.
func (a Auth) Validate() error {
	if m := a.methods(); len(m) > 1 {
		return fmt.Errorf("more than one way to authenticate is set (%s); choose one", strings.Join(m, ", "))
	}
	if a.Password != "" && a.User == "" {
		return errors.New("a password is set without a user name")
	}
	if (a.TLSCert == "") != (a.TLSKey == "") {
		return errors.New("a TLS client certificate needs both the certificate and its key (--tls-cert and --tls-key)")
	}
	return nil
}

// natsOptions turns the settings into nats.go options. File references
// are checked now, so a wrong path fails before connecting.
func (a Auth) natsOptions() ([]nats.Option, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	var opts []nats.Option
	for _, f := range []struct{ what, path string }{
		{"credentials file", a.Creds}, {"nkey seed file", a.NKey},
		{"TLS CA file", a.TLSCA}, {"TLS certificate", a.TLSCert}, {"TLS key", a.TLSKey},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return nil, fmt.Errorf("%s: %w", f.what, err)
		}
	}
	switch a.Method() {
	case "creds":
		opts = append(opts, nats.UserCredentials(a.Creds))
	case "nkey":
		o, err := nats.NkeyOptionFromSeed(a.NKey)
		if err != nil {
			return nil, fmt.Errorf("nkey seed file %s: %w", a.NKey, err)
		}
		opts = append(opts, o)
	case "user":
		opts = append(opts, nats.UserInfo(a.User, a.Password))
	case "token":
		opts = append(opts, nats.Token(a.Token))
	}
	if a.TLSCert != "" {
		opts = append(opts, nats.ClientCert(a.TLSCert, a.TLSKey))
	}
	if a.TLSCA != "" {
		opts = append(opts, nats.RootCAs(a.TLSCA))
	}
	if a.TLSFirst {
		opts = append(opts, nats.TLSHandshakeFirst())
	}
	return opts, nil
}

// RedactURL hides the user information of NATS URLs (a comma-separated
// list): nats://alice:secret@host becomes nats://xxxxx@host.
func RedactURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.User == nil {
			if err != nil && strings.Contains(p, "@") {
				parts[i] = "<unparsable URL>"
			}
			continue
		}
		u.User = url.User("xxxxx")
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}
