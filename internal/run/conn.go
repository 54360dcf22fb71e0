package run

import (
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/jetflow/jetflow/internal/cli"

	"github.com/jetflow/jetflow/jetstream"
)

// ConnFlags are the flags that say where NATS is and how to authenticate,
// with the environment variables natscli reads. A flag left empty takes
// its variable; a variable left empty takes the NATS context's setting.
// Secrets have no default in --help: their variables are read after
// parsing.
type ConnFlags struct {
	URL, Context           string
	NoContext              bool
	Creds, NKey            string
	User, Password, Token  string
	TLSCA, TLSCert, TLSKey string
	InboxPrefix            string
	defaultURL             string
	useSelected            bool
}

// ConnOptions says how a binary connects by default.
type ConnOptions struct {
	// DefaultURL applies when neither flag, environment nor context name
	// a server ("" for the dispatcher: embedded server).
	DefaultURL string
	// URLHelp describes the default in --nats-url's help.
	URLHelp string
	// UseSelected reads natscli's selected context when none is named
	// (natscli does; the dispatcher does not, so that starting it never
	// turns "embedded server" into "the server a context points at").
	UseSelected bool
}

// Register adds the connection flags to fs. The variables natscli reads
// (NATS_URL, NATS_CREDS, ...) are read after each flag's own JETFLOW_
// variable (cli.BindEnv).
func (f *ConnFlags) Register(fs *pflag.FlagSet, o ConnOptions) {
	f.defaultURL, f.useSelected = o.DefaultURL, o.UseSelected
	fs.StringVar(&f.URL, "nats-url", "", "NATS server URLs, comma-separated; "+o.URLHelp)
	ctxHelp := "natscli context to connect with (~/.config/nats/context/NAME.json); flags and environment override its settings"
	if o.UseSelected {
		ctxHelp += "; default: the selected context (nats context select)"
		fs.BoolVar(&f.NoContext, "no-context", false, "do not read natscli's selected context")
	}
	fs.StringVar(&f.Context, "context", "", ctxHelp)
	fs.StringVar(&f.Creds, "creds", "", "credentials file (user JWT and seed; operator mode, Synadia Cloud)")
	fs.StringVar(&f.NKey, "nkey", "", "nkey seed file, e.g. from jetflow security init")
	fs.StringVar(&f.User, "user", "", "user name; without --password it is a token, as in natscli")
	fs.StringVar(&f.Password, "password", "", "password")
	fs.StringVar(&f.Token, "token", "", "authentication token")
	fs.StringVar(&f.TLSCA, "tls-ca", "", "PEM file of the CAs that sign the server's certificate")
	fs.StringVar(&f.TLSCert, "tls-cert", "", "client certificate for mutual TLS")
	fs.StringVar(&f.TLSKey, "tls-key", "", "client certificate's key")
	fs.StringVar(&f.InboxPrefix, "inbox-prefix", "", "subject prefix of reply inboxes; default: this role's (see jetflow security permissions)")
	for flag, v := range map[string]string{"nats-url": "NATS_URL", "context": "NATS_CONTEXT", "creds": "NATS_CREDS", "nkey": "NATS_NKEY",
		"user": "NATS_USER", "password": "NATS_PASSWORD", "token": "NATS_TOKEN", "tls-ca": "NATS_CA", "tls-cert": "NATS_CERT", "tls-key": "NATS_KEY"} {
		cli.AlsoEnv(fs, flag, v)
	}
}

// Resolve applies the environment and the NATS context: the URL, Auth,
// InboxPrefix and Context of the returned Conn are set. inbox is the
// role's inbox prefix, used unless a flag or the context sets one.
func (f *ConnFlags) Resolve(inbox string) (Conn, error) {
	env := func(v *string, names ...string) string {
		if *v != "" {
			return *v
		}
		for _, n := range names {
			if e := os.Getenv(n); e != "" {
				return e
			}
		}
		return ""
	}
	// Flags, then the environment, then the context: a layer that names
	// a way to authenticate replaces the next layer's.
	flags := userToken(jetstream.Auth{Creds: f.Creds, NKey: f.NKey, User: f.User, Password: f.Password, Token: f.Token,
		TLSCA: f.TLSCA, TLSCert: f.TLSCert, TLSKey: f.TLSKey})
	environ := userToken(jetstream.Auth{Creds: os.Getenv("NATS_CREDS"), NKey: os.Getenv("NATS_NKEY"),
		User: os.Getenv("NATS_USER"), Password: os.Getenv("NATS_PASSWORD"), Token: os.Getenv("NATS_TOKEN"),
		TLSCA: os.Getenv("NATS_CA"), TLSCert: os.Getenv("NATS_CERT"), TLSKey: os.Getenv("NATS_KEY")})
	c := Conn{URL: env(&f.URL, "JETFLOW_NATS_URL", "NATS_URL"), Auth: flags.Over(environ), InboxPrefix: f.InboxPrefix}
	name := env(&f.Context, "NATS_CONTEXT")
	if name == "" && f.useSelected && !f.NoContext {
		name = jetstream.SelectedNATSContext()
	}
	if name != "" {
		nc, err := jetstream.LoadNATSContext(name)
		if err != nil {
			return Conn{}, err
		}
		c.Context = name
		if c.URL == "" {
			c.URL = nc.URL
		}
		c.Auth = c.Auth.Over(nc.Auth)
		if c.InboxPrefix == "" {
			c.InboxPrefix = nc.InboxPrefix
		}
	}
	if c.URL == "" {
		c.URL = f.defaultURL
	}
	if c.InboxPrefix == "" {
		c.InboxPrefix = inbox
	}
	if err := c.Auth.Validate(); err != nil {
		src := "flags and environment"
		if c.Context != "" {
			src += " and NATS context " + c.Context
		}
		return Conn{}, fmt.Errorf("NATS credentials (%s): %w", src, err)
	}
	return c, nil
}

// userToken reads a user name without a password as a token, as natscli
// does.
func userToken(a jetstream.Auth) jetstream.Auth {
	if a.User != "" && a.Password == "" && a.Token == "" {
		a.User, a.Token = "", a.User
	}
	return a
}
