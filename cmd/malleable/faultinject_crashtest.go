//go:build crashtest

package main

import (
	"fmt"
	"log/slog"
	"os"
	"syscall"
)

// faultInjection returns, when MALLEABLE_TEST_CRASH_AT names a handover step
// boundary, a hook that SIGKILLs the process there without any cleanup. It
// exists only in binaries built with -tags crashtest, for the crash-safety
// test.
func faultInjection(e env, log *slog.Logger) func(point string) {
	point := e.getenv("MALLEABLE_TEST_CRASH_AT")
	if point == "" {
		return nil
	}
	log.Warn("fault injection armed: the process will kill itself", "point", point)
	return func(p string) {
		if p == point {
			fmt.Fprintf(e.stderr, "malleable: fault injection: SIGKILL at %s\n", p)
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
}
