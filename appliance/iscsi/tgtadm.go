package iscsi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Exit codes of tgtadm 1.0.85, found by running it (see README.md). tgtadm
// exits with an errno: EINVAL for every refusal by tgtd, whatever its cause
// (the cause is only in the message), and for its own usage errors;
// ENOTCONN when nothing listens on the control port's socket.
const (
	exitRefused  = int(syscall.EINVAL)       // 22
	exitNoDaemon = int(syscall.ENOTCONN)     // 107
	exitConnRef  = int(syscall.ECONNREFUSED) // 111, in case connect's errno ever surfaces
)

// TgtadmError is a tgtadm call that did not succeed. It unwraps to the
// sentinel that fits (ErrNotFound, ErrExists, ErrBusy, ErrNoDaemon), if
// any, and to the context's error when the call's deadline passed.
type TgtadmError struct {
	Op       string // "target new", "account delete", ...
	ExitCode int    // -1 when tgtadm did not exit by itself
	Message  string // tgtadm's stderr, trimmed; it never echoes a password
	kind     error
	cause    error
}

// Error names the tgtadm operation and what tgtd answered; never a secret.
func (e *TgtadmError) Error() string {
	msg := e.Message
	if msg == "" && e.cause != nil {
		msg = e.cause.Error()
	}
	return fmt.Sprintf("tgtadm %s: exit %d: %s", e.Op, e.ExitCode, msg)
}

// Unwrap returns the sentinel and the underlying cause.
func (e *TgtadmError) Unwrap() []error {
	var errs []error
	if e.kind != nil {
		errs = append(errs, e.kind)
	}
	if e.cause != nil {
		errs = append(errs, e.cause)
	}
	return errs
}

// tgtadm runs one tgtadm call (the control port is added here) with the
// Driver's timeout and returns its stdout. op names the call in errors and
// logs; args are already validated.
func (d *Driver) run(ctx context.Context, op string, args ...string) ([]byte, error) {
	if d.optErr != nil {
		return nil, d.optErr
	}
	argv := append([]string{"-C", strconv.Itoa(d.port)}, args...)
	if d.observe != nil {
		d.observe(slices.Clone(argv))
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.tgtadm, argv...)
	cmd.Env = []string{"LC_ALL=C"}
	cmd.WaitDelay = time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	d.log.Debug("tgtadm", "op", op, "args", redact(argv), "duration", time.Since(start), "error", err)
	// A tgtd that dies mid-request leaves tgtadm exiting 0 with nothing on
	// stdout: that must not read as "no targets".
	if err == nil && bytes.Contains(stderr.Bytes(), []byte("tgtd closed the socket")) {
		return nil, &TgtadmError{Op: op, ExitCode: 0, Message: strings.TrimSpace(stderr.String()), kind: ErrNoDaemon}
	}
	if err == nil {
		return stdout.Bytes(), nil
	}
	te := &TgtadmError{Op: op, ExitCode: -1, Message: strings.TrimSpace(stderr.String())}
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		te.cause = fmt.Errorf("%w: %w", ctx.Err(), err)
	case errors.As(err, &exit):
		te.ExitCode = exit.ExitCode()
		te.kind = kindOf(te.ExitCode, te.Message)
	default:
		te.cause = err // tgtadm could not be started
	}
	return nil, te
}

// kindOf maps a tgtadm exit to a sentinel. The exit code tells a missing
// daemon from a refusal; only the message tells one refusal from another.
func kindOf(code int, message string) error {
	switch code {
	case exitNoDaemon, exitConnRef:
		return ErrNoDaemon
	case exitRefused:
		return refusalKind(message)
	}
	return nil
}

// refusalKind is the one place that reads tgtadm's text. tgtadm 1.0.85
// exits with EINVAL for every error tgtd answers and prints tgtd's error as
// "tgtadm: <text>" (tgtadm_strerror in usr/tgtadm.c):
//
//	can't find the target / logical unit / account / session / connection
//	can't find the binding, this access control rule does not exist
//	this target / logical unit number / account / access control rule already exists
//	this binding already exists
//	this target is still active, this logical unit is still active
//
// TestRefusalKind pins these texts; recheck them when tgt is upgraded.
func refusalKind(message string) error {
	switch m := strings.ToLower(message); {
	case strings.Contains(m, "can't find the"), strings.Contains(m, "does not exist"):
		return ErrNotFound
	case strings.Contains(m, "already exists"):
		return ErrExists
	case strings.Contains(m, "is still active"), strings.Contains(m, "is busy"):
		return ErrBusy
	}
	return nil
}

// redact returns argv with the value after --password replaced.
func redact(argv []string) []string {
	out := slices.Clone(argv)
	for i := range out {
		if out[i] == "--password" && i+1 < len(out) {
			out[i+1] = "<redacted>"
		}
	}
	return out
}
