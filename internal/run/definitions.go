package run

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// RegisterDir validates and stores every *.yaml, *.yml and *.json definition
// in dir, and makes the trigger stream capture their trigger subjects.
func RegisterDir(ctx context.Context, client *jetstream.Client, dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("definitions: %w", err)
	}
	for _, e := range entries {
		ext := strings.ToLower(filepath.Ext(e.Name()))
		if e.IsDir() || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		def, err := workflow.Parse(path, src)
		if err != nil {
			return err
		}
		if err := client.PutDefinition(ctx, def, src); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if def.Trigger != nil {
			if err := client.EnsureTriggerSubjects(ctx, def.Trigger.Subject); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
		}
	}
	return nil
}
