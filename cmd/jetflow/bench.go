package main

import (
	"errors"

	"github.com/spf13/cobra"
)

func benchCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "bench",
		Short: "Run benchmarks (see BENCHMARKS.md)",
		RunE: func(*cobra.Command, []string) error {
			return errors.New("not implemented yet")
		},
	}
}
