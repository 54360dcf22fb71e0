// Package promx holds the Prometheus helpers the dispatcher, the worker
// and the binaries share. It imports nothing but client_golang, so the
// worker package can use it without linking anything more.
package promx

import "github.com/prometheus/client_golang/prometheus"

// Collectors is several collectors as one: what a component's
// Collector method returns, to be registered with one call.
type Collectors []prometheus.Collector

// Describe implements prometheus.Collector.
func (cs Collectors) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range cs {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (cs Collectors) Collect(ch chan<- prometheus.Metric) {
	for _, c := range cs {
		c.Collect(ch)
	}
}
