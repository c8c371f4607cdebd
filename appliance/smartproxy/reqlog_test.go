package smartproxy

import (
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/malleable-cloud/malleable/appliance/smartproxy/proxytest"
)

// TestRequestLog: every request is logged at info, as Foreman's own proxy
// does, with method, path, status, duration and the client's CN, and never
// a query string, a credential or a boot token.
func TestRequestLog(t *testing.T) {
	h := newHarness(t, nil)
	var logs syncBuffer
	h.srv.log = slog.New(slog.NewTextHandler(&logs, nil)) // info, as configured by default
	ts := httptest.NewUnstartedServer(h.srv.Handler())
	ts.TLS = h.srv.tls
	ts.StartTLS()
	defer ts.Close()

	req := proxytest.ForemanRequest(ts.URL, "GET", "/bmc/10.0.0.5/chassis/power/status?bmc_provider=ipmitool&secret=s3cr3t", "")
	req.SetBasicAuth(bmcUser, proxytest.BMCPassword)
	proxytest.Do(t, h.foreman, req)
	proxytest.Do(t, h.foreman, proxytest.ForemanRequest(ts.URL, "GET", "/m2/boot/tok-0123456789abcdef", ""))
	untrusted := h.ca.Client(h.ca.ClientCert(t, "foreman.globex.example"))
	proxytest.Do(t, untrusted, proxytest.ForemanRequest(ts.URL, "GET", "/v2/features", ""))

	out := logs.String()
	for _, want := range []string{
		`level=INFO msg=request method=GET path=/bmc/10.0.0.5/chassis/power/status status=200 duration_ms=`,
		`client_cn=foreman.acme.example`,
		`path=/m2/boot/<token>`,
		`path=/v2/features status=403`, `client_cn=foreman.globex.example`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("request log lacks %q:\n%s", want, out)
		}
	}
	for _, secret := range []string{proxytest.BMCPassword, "s3cr3t", "bmc_provider", "tok-0123456789abcdef", "Basic "} {
		if strings.Contains(out, secret) {
			t.Errorf("request log shows %q:\n%s", secret, out)
		}
	}
}

// TestUntrustedNamesThisProxysSetting: the 403 for a client whose CN is not
// trusted keeps the Ruby proxy's opening words but names this proxy's own
// setting, not a settings.yml it does not have.
func TestUntrustedNamesThisProxysSetting(t *testing.T) {
	h := newHarness(t, nil)
	untrusted := h.ca.Client(h.ca.ClientCert(t, "foreman.globex.example"))
	status, _, body := proxytest.Do(t, untrusted, proxytest.ForemanRequest(h.ts.URL, "GET", "/v2/features", ""))
	if status != 403 || !strings.HasPrefix(body, "Untrusted client foreman.globex.example attempted to access /features.") ||
		!strings.Contains(body, "[smart_proxy] trusted_hosts") || strings.Contains(body, "settings.yml") {
		t.Errorf("untrusted client: %d %q", status, body)
	}
}
