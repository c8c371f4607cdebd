package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/smartproxy/proxytest"
)

// foremanCN is the CN of the tenant's Foreman client certificate.
const foremanCN = "foreman.acme.example"

// TestSmartProxyEndToEnd runs the real binary's `smart-proxy` for a tenant
// of a real `serve`: Foreman's root requests over HTTPS with a client
// certificate answer as the golden files in appliance/smartproxy/testdata
// say, a read of a node the tenant does not hold goes through the broker
// and reads off, `smart-proxy health` passes with the tenant's token and
// fails with a wrong one, and SIGTERM stops the proxy cleanly.
func TestSmartProxyEndToEnd(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "state"))
	d.ok(t, "tenant", "add", "acme")
	// A node acme has a lease of only later: acme knows it, and reads it off.
	d.ok(t, "node", "add", "node-1", "--mac", "52:54:00:ac:00:01")
	d.ok(t, "lease", "add", "--node", "node-1", "--tenant", "acme", "--start", "+1h", "--duration", "2h")
	token := strings.TrimSpace(d.ok(t, "tenant", "token", "acme"))

	dir := t.TempDir()
	ca := proxytest.NewCA(t, "Malleable test CA")
	ca.WriteServerTLS(t, dir, "localhost")
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("broker.token", token+"\n")
	write("wrong.token", "not-acme-s-token-0123456789abcdef\n")
	write("bmc.password", "virtual-bmc-secret\n")
	addr := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	ini := func(tokenFile string) string {
		return fmt.Sprintf(`[smart_proxy]
https_listen = %s
ssl_certificate = %s
ssl_private_key = %s
ssl_ca_file = %s
trusted_hosts = %s
log_level = debug
[broker]
url = http://%s
token_file = %s
[bmc]
username = acme
password_file = %s
`, addr, filepath.Join(dir, "proxy.crt"), filepath.Join(dir, "proxy.key"), filepath.Join(dir, "ca.crt"),
			foremanCN, d.addr, filepath.Join(dir, tokenFile), filepath.Join(dir, "bmc.password"))
	}
	cfg := write("proxy.ini", ini("broker.token"))
	badCfg := write("wrong-token.ini", ini("wrong.token"))

	p := startProxy(t, cfg)
	if p.addr != addr {
		t.Errorf("proxy announced %s, want %s", p.addr, addr)
	}
	base := "https://" + addr
	foreman := proxyClient(t, ca, foremanCN)
	for _, c := range []struct {
		golden string
		client *http.Client
		path   string
		login  bool
	}{
		{"v2_features_nocert", proxyClient(t, ca, ""), "/v2/features", false},
		{"power_status_not_held", foreman, "/bmc/node-1/chassis/power/status", true},
	} {
		req, _ := http.NewRequest(http.MethodGet, base+c.path, nil)
		req.Header.Set("Accept", "application/json")
		if c.login {
			req.SetBasicAuth("acme", "virtual-bmc-secret")
		}
		status, ct, body := fetch(t, c.client, req)
		wantStatus, wantCT, wantBody := readProxyGolden(t, c.golden)
		if status != wantStatus || ct != wantCT || body != wantBody {
			t.Errorf("GET %s = %d %q %q, want %d %q %q (testdata/%s.golden)", c.path, status, ct, body,
				wantStatus, wantCT, wantBody, c.golden)
		}
	}
	// This appliance runs without M2: the proxy advertises bmc alone.
	req, _ := http.NewRequest(http.MethodGet, base+"/features", nil)
	if status, _, body := fetch(t, foreman, req); status != 200 || body != `["bmc"]` {
		t.Errorf("GET /features = %d %s, want [\"bmc\"] from an appliance without M2", status, body)
	}
	req, _ = http.NewRequest(http.MethodGet, base+"/v2/features", nil)
	_, _, body := fetch(t, foreman, req)
	var mods map[string]struct {
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(body), &mods); err != nil {
		t.Fatalf("/v2/features: %v", err)
	}
	if len(mods) != 1 || mods["bmc"].State != "running" {
		t.Errorf("/v2/features modules = %+v, want bmc running alone", mods)
	}

	out, errOut, code := runProxyCmd(t, "smart-proxy", "health", "--config", cfg)
	if code != 0 || !strings.HasPrefix(out, "ok:") || !strings.Contains(out, "tenant acme") {
		t.Errorf("health: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = runProxyCmd(t, "smart-proxy", "health", "--config", badCfg)
	if code != 1 || !strings.Contains(errOut, "smart-proxy unhealthy") || !strings.Contains(errOut, "does not take its credential") {
		t.Errorf("health with a wrong broker token: exit %d, want 1 with the reason\n%s%s", code, out, errOut)
	}

	p.stop(t)
	if !strings.Contains(p.log.String(), "serving tenant") || !strings.Contains(p.log.String(), "tenant=acme") {
		t.Errorf("the proxy never said which tenant it serves:\n%s", p.log)
	}
	d.stop(t)
}

// TestSmartProxyConfigCheck checks `smart-proxy config check`: every
// problem of a bad file named by its section.key with exit 2, the shipped
// example accepted.
func TestSmartProxyConfigCheck(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.ini")
	os.WriteFile(bad, []byte("[smart_proxy]\nhttps_port = 8443\nhttps_listen = :99999\n"+
		"[broker]\nurl = appliance:8780\nstatus_timeout = 5s\n[bmc]\nusername = a:b\n"), 0o600)
	out, errOut, code := runProxyCmd(t, "smart-proxy", "config", "check", bad)
	if code != 2 {
		t.Errorf("config check bad.ini: exit %d, want 2\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		"smart_proxy.https_port: unknown key", "smart_proxy.https_listen", "smart_proxy.trusted_hosts",
		"smart_proxy.ssl_certificate", "broker.url", "broker.token_file", "broker.status_timeout",
		"bmc.username", "bmc.password_file",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("config check output lacks %q:\n%s", want, errOut)
		}
	}

	example, _, code := runProxyCmd(t, "smart-proxy", "config", "example")
	if code != 0 {
		t.Fatalf("config example: exit %d", code)
	}
	ex := filepath.Join(dir, "example.ini")
	os.WriteFile(ex, []byte(example), 0o600)
	out, errOut, code = runProxyCmd(t, "smart-proxy", "config", "check", ex)
	if code != 2 || strings.Contains(out, "OK") {
		t.Errorf("the unedited example passes config check: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"smart_proxy.ssl_certificate: required", "smart_proxy.trusted_hosts: required",
		"broker.token_file: required", "bmc.username: required", "bmc.password_file: required", "smart-proxy init"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("config check of the example lacks %q:\n%s", want, errOut)
		}
	}
	// A file that validates but names a token others can read.
	tok := filepath.Join(dir, "broker.token")
	os.WriteFile(tok, []byte("mlb_0123456789abcdef\n"), 0o644)
	pw := filepath.Join(dir, "bmc.password")
	os.WriteFile(pw, []byte("secret\n"), 0o600)
	loose := filepath.Join(dir, "loose.ini")
	os.WriteFile(loose, []byte(fmt.Sprintf("[smart_proxy]\nhttps_listen = off\nhttp_listen = 127.0.0.1:8000\ntrusted_hosts = f.example\n"+
		"[broker]\ntoken_file = %s\n[bmc]\nusername = acme\npassword_file = %s\n", tok, pw)), 0o600)
	out, errOut, code = runProxyCmd(t, "smart-proxy", "config", "check", loose)
	if code != 2 || !strings.Contains(errOut, "broker.token_file: "+tok+" has mode 0644") || !strings.Contains(errOut, "chmod 600") {
		t.Errorf("config check with a world-readable token: exit %d\n%s%s", code, out, errOut)
	}
	os.Chmod(tok, 0o600)
	if out, errOut, code := runProxyCmd(t, "smart-proxy", "config", "check", loose); code != 0 || !strings.Contains(out, "OK") ||
		!strings.Contains(out, "broker http://127.0.0.1:8780") {
		t.Errorf("config check with private files: exit %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code := runProxyCmd(t, "smart-proxy", "--config", bad); code != 2 || !strings.Contains(errOut, "broker.status_timeout") {
		t.Errorf("smart-proxy with a bad config: exit %d, want 2\n%s", code, errOut)
	}
}

// proxyProc is a running `malleable smart-proxy`.
type proxyProc struct {
	cmd  *exec.Cmd
	addr string // the HTTPS listener
	log  *procLog
	done chan error
}

// procLog is a process's output as it arrives, safe to read while the
// process still writes.
type procLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *procLog) WriteString(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.WriteString(s)
}

func (l *procLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// startProxy runs `malleable smart-proxy --config cfg` and waits until it
// announces its HTTPS listener.
func startProxy(t *testing.T, cfg string) *proxyProc {
	t.Helper()
	cmd := exec.Command(binary, "smart-proxy", "--config", cfg)
	cmd.Env = []string{"HOME=" + t.TempDir()}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proxyProc{cmd: cmd, log: &procLog{}, done: make(chan error, 1)}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.log.WriteString(line + "\n")
			if rest, ok := strings.CutPrefix(line, "malleable: smart-proxy listening (https "); ok {
				addr, _, _ := strings.Cut(rest, ")")
				addr, _, _ = strings.Cut(addr, ",")
				addrc <- addr
			}
		}
		p.done <- cmd.Wait()
	}()
	select {
	case p.addr = <-addrc:
	case err := <-p.done:
		t.Fatalf("smart-proxy exited before listening: %v\n%s", err, p.log)
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("smart-proxy did not announce its address:\n%s", p.log)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// stop sends SIGTERM and requires a clean exit.
func (p *proxyProc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("smart-proxy exited with %v after SIGTERM:\n%s", err, p.log)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("smart-proxy did not stop after SIGTERM:\n%s", p.log)
	}
}

// runProxyCmd runs the binary with args and no appliance, returning its
// stdout, stderr and exit code.
func runProxyCmd(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = []string{"HOME=" + t.TempDir()}
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

// fetch sends req and returns the answer's status, Content-Type and body.
func fetch(t *testing.T, c *http.Client, req *http.Request) (int, string, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
}

// readProxyGolden reads the status, Content-Type and body of the smart-proxy
// package's golden answer name: the Ruby proxy's answer to the same request.
func readProxyGolden(t *testing.T, name string) (int, string, string) {
	t.Helper()
	path := filepath.Join("..", "..", "appliance", "smartproxy", "testdata", name+".golden")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	head, body, ok := strings.Cut(string(b), "\n\n")
	lines := strings.Split(head, "\n")
	if !ok || len(lines) != 3 {
		t.Fatalf("%s: want a request line, HTTP status and Content-Type, a blank line, the body", path)
	}
	status, err := strconv.Atoi(strings.TrimPrefix(lines[1], "HTTP "))
	if err != nil {
		t.Fatalf("%s: status line %q", path, lines[1])
	}
	return status, strings.TrimPrefix(lines[2], "Content-Type: "), body
}

// proxyClient returns an HTTPS client that trusts ca and presents a client
// certificate with CN cn, or none if cn is empty.
func proxyClient(t *testing.T, ca *proxytest.CA, cn string) *http.Client {
	t.Helper()
	var certs []tls.Certificate
	if cn != "" {
		certs = append(certs, ca.ClientCert(t, cn))
	}
	c := ca.Client(certs...)
	c.Timeout = 10 * time.Second
	t.Cleanup(c.CloseIdleConnections)
	return c
}
