package run

// For the external tests (help_test.go), which also run the dispatcher
// command of package serve.
var (
	ClearNATSEnv  = clearNATSEnv
	CaptureStderr = captureStderr
)
