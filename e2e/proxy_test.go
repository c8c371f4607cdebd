package e2e

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/client"
	"github.com/malleable-cloud/malleable/appliance/smartproxy"
	"github.com/malleable-cloud/malleable/appliance/smartproxy/proxytest"
)

// tenantProxy is one tenant's smart-proxy, run as `malleable smart-proxy`
// runs it (smartproxy.Server.Run: HTTPS for Foreman, plain HTTP for the
// boot listener, on loopback ports of its choosing), talking to the
// appliance with the tenant's token.
type tenantProxy struct {
	t     testing.TB
	cfg   smartproxy.Config
	ca    *proxytest.CA
	token string // the tenant's broker token
	// url is the HTTPS listener (https://host:port), bootURL the boot
	// listener (http://host:port).
	url, bootURL string
	// foremanClient presents the tenant's Foreman client certificate.
	foremanClient *http.Client
}

// newTenantProxy creates tenant in the appliance and starts its proxy
// with the tenant's broker token; the proxy stops when the test ends.
func newTenantProxy(t testing.TB, a *applianceRig, tenant string, log *slog.Logger) *tenantProxy {
	t.Helper()
	ctx := context.Background()
	if _, err := a.admin.CreateTenant(ctx, client.TenantSpec{Name: tenant}); err != nil {
		t.Fatal(err)
	}
	token, err := a.admin.TenantToken(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	ca := proxytest.NewCA(t, tenant+" CA")
	dir := t.TempDir()
	files := ca.WriteServerTLS(t, dir, "proxy."+tenant+".example")
	cfg := smartproxy.DefaultConfig()
	cfg.Proxy.HTTPSListen = "127.0.0.1:0"
	cfg.Proxy.SSLCertificate, cfg.Proxy.SSLPrivateKey, cfg.Proxy.SSLCAFile = files.Certificate, files.PrivateKey, files.CA
	cfg.Proxy.TrustedHosts = proxytest.ForemanCN
	cfg.M2.BootListen = "127.0.0.1:0"
	cfg.Broker.URL = a.url
	cfg.Broker.TokenFile = proxytest.WriteFile(t, dir, "broker.token", []byte(token+"\n"))
	cfg.Broker.StatusTimeout = 2 * time.Second
	cfg.BMC.Username = tenant
	cfg.BMC.PasswordFile = proxytest.WriteFile(t, dir, "bmc.password", []byte(proxytest.BMCPassword+"\n"))
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	c, err := smartproxy.OpenClient(cfg.Broker)
	if err != nil {
		t.Fatal(err)
	}
	p := &tenantProxy{t: t, cfg: cfg, ca: ca, token: token, foremanClient: ca.Client(ca.ClientCert(t, proxytest.ForemanCN))}
	p.serve(c, log.With("proxy", tenant))
	return p
}

// serve runs a proxy over p's configuration and c until the test ends,
// and points p at its listeners.
func (p *tenantProxy) serve(c *smartproxy.Client, log *slog.Logger) {
	p.t.Helper()
	srv, err := smartproxy.New(p.cfg, smartproxy.Options{Broker: c.Broker, Storage: c.M2, Logger: log})
	if err != nil {
		p.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan smartproxy.Addrs, 1)
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, func(a smartproxy.Addrs) { ready <- a }) }()
	select {
	case addrs := <-ready:
		p.url, p.bootURL = "https://"+addrs.HTTPS, "http://"+addrs.Boot
	case err := <-done:
		cancel()
		p.t.Fatalf("smart-proxy did not start: %v", err)
	}
	p.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			p.t.Errorf("smart-proxy: %v", err)
		}
	})
}

// foreman sends a request as the tenant's Foreman, with the tenant's
// virtual BMC identity, and returns the status and body.
func (p *tenantProxy) foreman(method, path, body string) (int, string) {
	p.t.Helper()
	req := proxytest.ForemanRequest(p.url, method, path, body)
	req.SetBasicAuth(p.cfg.BMC.Username, proxytest.BMCPassword)
	status, _, b := proxytest.Do(p.t, p.foremanClient, req)
	return status, b
}

// json sends a JSON request to the M2 plugin.
func (p *tenantProxy) json(method, path, body string) (int, string) {
	p.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, p.url+path, rd)
	if err != nil {
		p.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	status, _, b := proxytest.Do(p.t, p.foremanClient, req)
	return status, b
}

// bootScript fetches a node's boot script from the boot listener, as
// iPXE does: plain HTTP, no credentials but the token.
func (p *tenantProxy) bootScript(token string) (int, string) {
	p.t.Helper()
	status, _, b := proxytest.Do(p.t, http.DefaultClient, proxytest.ForemanRequest(p.bootURL, "GET", "/m2/boot/"+token, ""))
	return status, b
}

// expect checks one answer.
func expect(t *testing.T, what string, status int, body string, wantStatus int, want string) {
	t.Helper()
	if status != wantStatus || !strings.Contains(body, want) {
		t.Fatalf("%s: %d %q, want %d containing %q", what, status, body, wantStatus, want)
	}
}

// check is expect that lets the test go on: for a refusal whose absence
// must not hide what the rest of the test proves.
func check(t *testing.T, what string, status int, body string, wantStatus int, want string) {
	t.Helper()
	if status != wantStatus || !strings.Contains(body, want) {
		t.Errorf("%s: %d %q, want %d containing %q", what, status, redactScript(body), wantStatus, want)
	}
}

// redactScript hides the CHAP secret of a boot script answered by mistake.
func redactScript(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "set password ") {
			lines[i] = "set password <redacted>"
		}
	}
	return strings.Join(lines, "\n")
}

// between returns the text of s between after and before.
func between(s, after, before string) string {
	_, rest, _ := strings.Cut(s, after)
	v, _, _ := strings.Cut(rest, before)
	return v
}
