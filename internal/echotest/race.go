//go:build race

package echotest

import "os"

// The binaries under test are built with the race detector when the tests
// are. A race stops them (exit 66, report on stderr or in the log), and they
// skip the detector's one-second pause at exit.
func init() {
	BuildFlags = append(BuildFlags, "-race")
	os.Setenv("GORACE", "halt_on_error=1 atexit_sleep_ms=0")
}
