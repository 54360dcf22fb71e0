package security

import (
	"fmt"
	"strconv"
	"strings"
)

// Conf renders the permissions as a block of a NATS server config user
// entry ("permissions: {...}"), indented by indent. The admin has none:
// a user without permissions may do anything in its account.
func (p Permissions) Conf(indent string) string {
	if p.Unrestricted {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%spermissions: {\n", indent)
	list := func(name string, subjects []string) {
		if len(subjects) == 0 {
			// An empty allow list would allow everything.
			fmt.Fprintf(&b, "%s  %s: { deny: [ \">\" ] }\n", indent, name)
			return
		}
		fmt.Fprintf(&b, "%s  %s: { allow: [\n", indent, name)
		for _, s := range subjects {
			// Quoted: an unquoted $ starts a variable in NATS config.
			fmt.Fprintf(&b, "%s    %s\n", indent, strconv.Quote(s))
		}
		fmt.Fprintf(&b, "%s  ] }\n", indent)
	}
	list("publish", p.Publish)
	list("subscribe", p.Subscribe)
	fmt.Fprintf(&b, "%s}\n", indent)
	return b.String()
}

// NSC renders the permissions as an nsc command that sets them on a user
// of an operator-mode (JWT) account, such as a Synadia Cloud account.
func (p Permissions) NSC(account, user string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "nsc edit user --account %s --name %s", shellQuote(account), shellQuote(user))
	if p.Unrestricted {
		b.WriteString(" --allow-pubsub '>'\n")
		return b.String()
	}
	for _, s := range p.Publish {
		fmt.Fprintf(&b, " \\\n  --allow-pub %s", shellQuote(s))
	}
	for _, s := range p.Subscribe {
		fmt.Fprintf(&b, " \\\n  --allow-sub %s", shellQuote(s))
	}
	b.WriteString("\n")
	return b.String()
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// comment is the one-line description of each role in generated files.
func (r Role) comment() string {
	switch r {
	case Admin:
		return "admin: provisions streams, consumers and buckets, registers definitions, maintains (every permission in the account; keep its seed offline)"
	case Dispatcher:
		return "dispatcher: consumes triggers and events, owns instance state, publishes tasks, timers and child starts"
	case Worker:
		return "worker: pulls tasks, reads inputs, writes outputs, publishes results"
	case Producer:
		return "producer: publishes on trigger subjects only"
	case Operator:
		return "operator: reads instances, data, definitions and dead letters; starts, cancels and signals"
	}
	return string(r)
}
