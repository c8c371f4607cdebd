package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSmartProxyInit: `smart-proxy init` writes, from the running
// appliance, a configuration that passes `config check` and runs as is:
// private files where secrets are, a CA that signed both the proxy's
// server certificate (for the host Foreman calls) and Foreman's client
// certificate (whose CN is trusted), the tenant's token that the broker
// takes; nothing secret on stdout; no overwrite without --force.
func TestSmartProxyInit(t *testing.T) {
	d := startDaemon(t, filepath.Join(t.TempDir(), "state"))
	d.ok(t, "tenant", "add", "acme")
	// An existing directory others may enter is made private.
	dir := filepath.Join(t.TempDir(), "acme-proxy")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	out := d.ok(t, "smart-proxy", "init", "--dir", dir, "--tenant", "acme", "--listen", addr,
		"--host", "127.0.0.1", "--foreman-cn", "foreman.acme.example")

	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("dir: %v %v, want mode 0700", fi, err)
	}
	for name, mode := range map[string]os.FileMode{
		"smartproxy.ini": 0o600, "broker.token": 0o600, "bmc.password": 0o600, "proxy.key": 0o600,
		"foreman.key": 0o600, "proxy.crt": 0o644, "foreman.crt": 0o644, "ca.crt": 0o644,
	} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v, want mode %04o", name, err, mode)
			continue
		}
		if !strings.Contains(out, filepath.Join(dir, name)) {
			t.Errorf("init does not list %s:\n%s", name, out)
		}
	}
	for _, secret := range []string{"broker.token", "bmc.password"} {
		b, _ := os.ReadFile(filepath.Join(dir, secret))
		if v := strings.TrimSpace(string(b)); len(v) < 16 || strings.Contains(out, v) {
			t.Errorf("%s: %d characters, shown on stdout: %v", secret, len(v), strings.Contains(out, v))
		}
	}
	if strings.Contains(out, "PRIVATE KEY") {
		t.Errorf("init prints a key:\n%s", out)
	}
	ini := filepath.Join(dir, "smartproxy.ini")
	if out, errOut, code := runProxyCmd(t, "smart-proxy", "config", "check", ini); code != 0 {
		t.Fatalf("config check of init's file: exit %d\n%s%s", code, out, errOut)
	}

	p := startProxy(t, ini)
	ca := x509.NewCertPool()
	caPEM, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	ca.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "foreman.crt"), filepath.Join(dir, "foreman.key"))
	if err != nil {
		t.Fatal(err)
	}
	foreman := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: ca, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}}
	req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/v2/features", nil)
	if status, _, body := fetch(t, foreman, req); status != 200 || !strings.Contains(body, `"bmc":`) {
		t.Errorf("GET /v2/features as Foreman = %d %s", status, body)
	}
	if out, errOut, code := runProxyCmd(t, "smart-proxy", "health", "--config", ini); code != 0 || !strings.Contains(out, "tenant acme") {
		t.Errorf("health: exit %d\n%s%s", code, out, errOut)
	}
	p.stop(t)

	_, errOut, code := d.cli(t, "smart-proxy", "init", "--dir", dir, "--tenant", "acme")
	if code == 0 || !strings.Contains(errOut, "--force") {
		t.Errorf("init over existing files: exit %d, want a refusal naming --force\n%s", code, errOut)
	}
	d.ok(t, "smart-proxy", "init", "--dir", dir, "--tenant", "acme", "--force")
	_, errOut, code = d.cli(t, "smart-proxy", "init", "--dir", filepath.Join(t.TempDir(), "x"), "--tenant", "nobody")
	if code == 0 || !strings.Contains(errOut, "nobody") {
		t.Errorf("init for an unknown tenant: exit %d\n%s", code, errOut)
	}
}

// TestREADMESmartProxyWalkthrough runs the README's smart-proxy block
// verbatim through bash against a real `serve`, with only the appliance's
// and the proxy's addresses swapped for the test's own.
func TestREADMESmartProxyWalkthrough(t *testing.T) {
	requireTools(t, "bash", "curl", "grep")
	block := readmeBlock(t, "smart-proxy-walkthrough")
	d := startDaemon(t, filepath.Join(t.TempDir(), "state"))
	work, token := walkthroughDir(t, d)
	proxyAddr := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	script := strings.NewReplacer("http://127.0.0.1:8780", "http://"+d.addr, "127.0.0.1:8443", proxyAddr).Replace(block)
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "MALLEABLE_SERVER="+d.addr, "MALLEABLE_TOKEN="+token)
	// The block's background proxy shares bash's process group: whatever
	// happens, the group goes when the test ends, or after two minutes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killGroup := func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	t.Cleanup(killGroup)
	timer := time.AfterFunc(2*time.Minute, killGroup)
	err := cmd.Wait()
	timer.Stop()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(work, "initech-proxy.log"))
		t.Fatalf("walkthrough failed: %v\n%s\n--- proxy log ---\n%s\n--- appliance log ---\n%s", err, &out, log, d.log)
	}
	text := out.String()
	for _, want := range []string{
		"initech-proxy/smartproxy.ini: OK", `["bmc"]`, "ok: smart-proxy at https://" + proxyAddr,
		`{"bmc":{"http_enabled":false,"https_enabled":true`, `{"action":"status","result":"off"}`,
		"node lab-9 is not leased to initech now; its next lease to initech starts",
		`msg="refused by the appliance"`, `method=PUT path=/bmc/lab-9/chassis/power/on status=403`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("walkthrough output lacks %q", want)
		}
	}
	for _, name := range []string{"broker.token", "bmc.password"} {
		b, _ := os.ReadFile(filepath.Join(work, "initech-proxy", name))
		if s := strings.TrimSpace(string(b)); s == "" || strings.Contains(text, s) {
			t.Errorf("%s is empty or shown in the walkthrough's output", name)
		}
	}
	if t.Failed() {
		t.Logf("walkthrough output:\n%s", &out)
	}
}
