//go:build !crashtest

package main

import "log/slog"

// faultInjection returns no hook: only a binary built with -tags crashtest
// (the crash-safety test's) can kill itself at a handover step boundary.
func faultInjection(env, *slog.Logger) func(point string) { return nil }
