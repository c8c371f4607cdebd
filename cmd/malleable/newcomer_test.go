package main

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// runBinary runs the malleable binary with env and returns its stdout,
// stderr and exit code.
func runBinary(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append([]string{"HOME=" + t.TempDir()}, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), errb.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), 0
}

// TestHelp: every --help prints its usage once and exits 0.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{
		{"node", "add", "--help"}, {"disk", "create", "-h"}, {"lease", "list", "--help"},
		{"serve", "--help"}, {"m2", "--help"}, {"m2", "serve", "--help"}, {"config", "check", "--help"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			out, errOut, code := runBinary(t, nil, args...)
			all := out + errOut
			if code != 0 {
				t.Errorf("exit %d, want 0\n%s", code, all)
			}
			if n := strings.Count(all, "Usage:"); n != 1 {
				t.Errorf("usage printed %d times, want once:\n%s", n, all)
			}
		})
	}
	if _, errOut, code := runBinary(t, nil, "m2"); code != 2 || !strings.Contains(errOut, "m2 serve") {
		t.Errorf("m2 with no subcommand: exit %d, want 2 naming 'm2 serve'\n%s", code, errOut)
	}
}

// TestTokenNotOnCommandLine: the admin token is refused on the command
// line, where every local user can read it in /proc, with a pointer to the
// ways that keep it out of argv.
func TestTokenNotOnCommandLine(t *testing.T) {
	_, errOut, code := runBinary(t, nil, "node", "list", "--server", "127.0.0.1:1", "--token", "s3cret-value")
	if code != 2 {
		t.Errorf("--token: exit %d, want 2", code)
	}
	for _, want := range []string{"--token-file", "MALLEABLE_TOKEN"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("--token refusal lacks %q:\n%s", want, errOut)
		}
	}
	if strings.Contains(errOut, "s3cret-value") {
		t.Errorf("the refusal echoes the token:\n%s", errOut)
	}
}

// TestConnectionRefused: a CLI command with no appliance at its address
// says what to do.
func TestConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing answers there now
	tok := filepath.Join(t.TempDir(), "admin.token")
	os.WriteFile(tok, []byte("0123456789abcdef\n"), 0o600)
	_, errOut, code := runBinary(t, nil, "node", "list", "--server", addr, "--token-file", tok)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	for _, want := range []string{"no appliance answers at http://" + addr, "scripts/run.sh", "--config", "--server"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("error lacks %q:\n%s", want, errOut)
		}
	}
}

// TestAlreadyRunning: a second appliance on the same data directory says
// which process holds it and exits 1.
func TestAlreadyRunning(t *testing.T) {
	data := filepath.Join(t.TempDir(), "state")
	d := startDaemon(t, data)
	cfg := filepath.Join(t.TempDir(), "appliance.ini")
	os.WriteFile(cfg, []byte("[m2]\nenabled = false\n"), 0o600)
	done := make(chan struct{})
	var out, errOut string
	var code int
	go func() {
		defer close(done)
		out, errOut, code = runBinary(t, nil, "serve", "--data-dir", data, "--listen", "127.0.0.1:0", "--config", cfg)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the second serve did not exit")
	}
	want := "malleable is already running (pid " + strconv.Itoa(d.cmd.Process.Pid) + ") with data dir " + data
	if code != 1 || !strings.Contains(errOut, want) {
		t.Errorf("second serve: exit %d, want 1 with %q\n%s%s", code, want, out, errOut)
	}
	d.stop(t)
	// The lock is released on exit: the next start succeeds.
	startDaemon(t, data).stop(t)
}
