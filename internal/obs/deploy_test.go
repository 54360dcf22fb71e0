package obs_test

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/internal/obs"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/worker"
)

// TestDashboardNamesExist: every jetflow_* series the Grafana dashboard
// and docs/observability.md name is one the dispatcher, the worker or the
// connection exposes (histograms with their _bucket suffix), and the
// scrape config passes `promtool check config` when promtool is there.
func TestDashboardNamesExist(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	d, err := dispatcher.New(e.Client, dispatcher.Config{})
	require.NoError(t, err)
	w, err := worker.New(jftest.App(e.Client), worker.Config{})
	require.NoError(t, err)
	known := map[string]bool{}
	ch := make(chan *prometheus.Desc, 256)
	go func() {
		for _, c := range []prometheus.Collector{d.Collector(), w.Collector(), obs.ClientCollector(e.Client)} {
			c.Describe(ch)
		}
		close(ch)
	}()
	name := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for desc := range ch {
		m := name.FindStringSubmatch(desc.String())
		require.NotNil(t, m, desc.String())
		known[m[1]] = true
	}
	used := regexp.MustCompile(`jetflow_[a-z_]+`)
	for _, f := range []string{"../../deploy/grafana/jetflow-dashboard.json", "../../docs/observability.md"} {
		src, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, n := range used.FindAllString(string(src), -1) {
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_sum"), "_count")
			if strings.HasPrefix(n, "jetflow_presence") || strings.HasPrefix(n, "jetflow_instances") || strings.HasPrefix(n, "jetflow_data") ||
				strings.HasPrefix(n, "jetflow_definitions") || strings.HasPrefix(n, "jetflow_effects") || n == "jetflow_" {
				continue // bucket names
			}
			require.True(t, known[base], "%s names %s, which nothing exposes", f, n)
		}
	}
	if path, err := exec.LookPath("promtool"); err == nil {
		out, err := exec.Command(path, "check", "config", "../../deploy/prometheus/prometheus.yml").CombinedOutput()
		require.NoError(t, err, "%s", out)
	}
}
