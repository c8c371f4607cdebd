// Package proxytest is the smart-proxy's test support, shared by the
// package's own tests and the end-to-end tests in e2e/: a certificate
// authority made per test, the files a proxy's configuration names, and
// requests shaped as Foreman sends them. Import it from _test.go files
// only. It does not import appliance/smartproxy, so that package's
// internal tests can use it too.
package proxytest

import (
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	// ForemanCN is the CN of the tenant's Foreman client certificate in
	// the tests, and a trusted host of every proxy they configure.
	ForemanCN = "foreman.acme.example"
	// BMCPassword is the tenant's virtual BMC password in the tests: what
	// Foreman stores on its hosts and sends as HTTP Basic.
	BMCPassword = "virtual-bmc-secret"
)

// Logger returns a logger that writes to t's log, at debug level.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// ForemanRequest builds a request exactly as Foreman's ProxyAPI::Resource
// (RestClient) sends it: Accept JSON, request and session ids, and a
// form-encoded body when body is set. Callers add the Basic credentials.
// It panics on a malformed method or URL: a mistake in the test itself.
func ForemanRequest(base, method, path, body string) *http.Request {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		panic(err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Accept-Encoding", "gzip;q=1.0,deflate;q=0.6,identity;q=0.3")
	req.Header.Set("User-Agent", "rest-client/2.1.0 (linux x86_64) ruby/3.1.2p20")
	req.Header.Set("X-Request-Id", "0b6c5f0e-7a6b-4c43-9d5e-1a2b3c4d5e6f")
	req.Header.Set("X-Session-Id", "6f5e4d3c-2b1a-4e5d-9c43-7a6b0e5f6c0b")
	if body != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	return req
}

// Do sends req with c and returns the status, Content-Type and body; a
// transport error fails the test.
func Do(t testing.TB, c *http.Client, req *http.Request) (status int, contentType, body string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

// WriteFile writes data under dir with mode 0600 (as the proxy wants its
// secrets) and returns the path.
func WriteFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
