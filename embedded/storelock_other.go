//go:build !unix

package embedded

import "os"

// tryLock: store directories are locked on Unix systems only.
func tryLock(*os.File) (bool, error) { return true, nil }
