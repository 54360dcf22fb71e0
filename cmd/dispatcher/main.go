// Command dispatcher runs a jetflow dispatcher. With no NATS URL it starts
// an embedded NATS server with JetStream first, so this one command runs
// jetflow on a fresh machine; with --worker it also runs the built-in task
// types in-process. It is `jetflow dispatcher`; flags: --help.
package main

import (
	"github.com/jetflow/jetflow/internal/cli"
	"github.com/jetflow/jetflow/internal/cli/dispatchercmd"
)

func main() { cli.Main(dispatchercmd.New()) }
