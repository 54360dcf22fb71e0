// Command worker is jetflow's reference worker: it runs the built-in task
// types (echo, noop, sleep, fail, http). Run as many replicas as you like.
// It is `jetflow worker`; flags: --help.
package main

import (
	"github.com/jetflow/jetflow/internal/cli"
	"github.com/jetflow/jetflow/internal/cli/workercmd"
)

func main() { cli.Main(workercmd.New()) }
