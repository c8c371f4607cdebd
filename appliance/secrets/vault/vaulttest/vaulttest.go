// Package vaulttest runs a real Vault dev server for tests: `vault server
// -dev` on a free loopback port with a random root token, stopped when the
// test ends. The binary comes from $MALLEABLE_VAULT or the cache that
// scripts/vault.sh fills. Import it from tests only.
package vaulttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Version is the Vault release scripts/vault.sh builds.
const Version = "1.21.0"

// DefaultBinary is where scripts/vault.sh leaves the binary when
// MALLEABLE_CACHE is unset.
const DefaultBinary = "/var/cache/malleable/vault/vault-" + Version

// Server is a running Vault dev server: in memory, unsealed, KV v2 mounted
// at "secret/".
type Server struct {
	// Addr is the server's URL, http://127.0.0.1:<port>.
	Addr string
	// RootToken is the dev server's root token.
	RootToken string

	cmd      *exec.Cmd
	logMu    sync.Mutex
	log      bytes.Buffer
	stopOnce sync.Once
	exited   chan struct{}
}

// Binary returns the Vault binary tests use: $MALLEABLE_VAULT, else
// $MALLEABLE_CACHE/vault/vault-<Version>, else DefaultBinary; "" when it
// is not there.
func Binary() string {
	candidates := []string{os.Getenv("MALLEABLE_VAULT")}
	if c := os.Getenv("MALLEABLE_CACHE"); c != "" {
		candidates = append(candidates, filepath.Join(c, "vault", "vault-"+Version))
	}
	candidates = append(candidates, DefaultBinary)
	for _, c := range candidates {
		if fi, err := os.Stat(c); c != "" && err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return c
		}
	}
	return ""
}

// Start runs a dev server for t and waits until it answers healthy. With
// no binary it skips t, loudly, naming scripts/vault.sh; with
// MALLEABLE_REQUIRE_REAL=1 it fails t instead.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary()
	if bin == "" {
		msg := "NO VAULT BINARY: the tests against a real Vault did not run. Build it once with " +
			"scripts/vault.sh (about 5 minutes), or point MALLEABLE_VAULT at a vault binary."
		if os.Getenv("MALLEABLE_REQUIRE_REAL") == "1" {
			t.Fatal(msg)
		}
		// Also on stderr: without -v, go test hides skip messages.
		fmt.Fprintf(os.Stderr, "=== %s: %s\n", t.Name(), msg)
		t.Skip(msg)
	}
	token := make([]byte, 16)
	if _, err := rand.Read(token); err != nil {
		t.Fatal(err)
	}
	s := &Server{RootToken: "root-" + hex.EncodeToString(token), exited: make(chan struct{})}
	port := freePort(t)
	s.Addr = "http://127.0.0.1:" + strconv.Itoa(port)
	s.cmd = exec.Command(bin, "server", "-dev", "-dev-root-token-id="+s.RootToken,
		"-dev-listen-address=127.0.0.1:"+strconv.Itoa(port), "-dev-no-store-token")
	// A clean environment: no VAULT_* from the caller changes the server,
	// and HOME keeps it from reading the user's files.
	s.cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=/usr/bin:/bin"}
	s.cmd.Stdout, s.cmd.Stderr = syncWriter{s}, syncWriter{s}
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() { s.cmd.Wait(); close(s.exited) }()
	t.Cleanup(s.Stop)
	if err := s.waitHealthy(30 * time.Second); err != nil {
		s.Stop()
		t.Fatalf("vault dev server at %s: %v\n%s", s.Addr, err, s.Log())
	}
	return s
}

// syncWriter appends the server's output to its log under a lock.
type syncWriter struct{ s *Server }

func (w syncWriter) Write(p []byte) (int, error) {
	w.s.logMu.Lock()
	defer w.s.logMu.Unlock()
	return w.s.log.Write(p)
}

// Log returns what the server printed so far, for failure messages. The
// dev server prints its root token; tests use a throwaway one.
func (s *Server) Log() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.log.String()
}

// Stop kills the server and waits for it to exit: later calls to it fail
// as with a Vault that went away. It is safe to call more than once.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
	})
}

func (s *Server) waitHealthy(limit time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.Addr+"/v1/sys/health", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.exited:
			return fmt.Errorf("exited before it was healthy")
		case <-ctx.Done():
			return fmt.Errorf("not healthy after %s (last: %v)", limit, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
