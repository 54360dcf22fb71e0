//go:build race

package dispatcher_test

// raceDetector is true in builds with -race, which run NATS about 20 times
// slower; load tests shrink their sizes (not their checks) under it.
const raceDetector = true
