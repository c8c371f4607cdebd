package smartproxy

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/smartproxy/proxytest"
)

// fuzzRig is one Server shared by a fuzz target's iterations, called
// in-process as a trusted HTTPS client (Foreman's certificate).
type fuzzRig struct {
	h    http.Handler
	b    *fakeBroker
	cert *x509.Certificate
}

func newFuzzRig(f *testing.F) *fuzzRig {
	ca := proxytest.NewCA(f, "Malleable fuzz CA")
	cfg := testConfig(f, f.TempDir(), ca)
	cfg.Broker.StatusTimeout = 20 * time.Millisecond // node-10 hangs: keep iterations fast
	b := newFakeBroker()
	srv, err := New(cfg, Options{Broker: b, Storage: newStubStorage()})
	if err != nil {
		f.Fatal(err)
	}
	c := ca.ClientCert(f, proxytest.ForemanCN)
	cert, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		f.Fatal(err)
	}
	return &fuzzRig{h: srv.Handler(), b: b, cert: cert}
}

// serve sends one request as Foreman would over TLS; ok is false for a
// request no HTTP client could send.
func (r *fuzzRig) serve(method, path, ct, body, auth string) (*httptest.ResponseRecorder, bool) {
	u, err := url.ParseRequestURI(path)
	if err != nil || !strings.HasPrefix(path, "/") || strings.ContainsAny(method, " \t\r\n") || method == "" {
		return nil, false
	}
	req, err := http.NewRequest(method, "https://proxy.acme.example:8443"+u.RequestURI(), strings.NewReader(body))
	if err != nil {
		return nil, false
	}
	req.RemoteAddr = "192.0.2.1:40000"
	req.TLS = &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{r.cert}}
	req.Header.Set("Accept", "application/json")
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	switch auth {
	case "":
		req.SetBasicAuth(bmcUser, proxytest.BMCPassword)
	case "none":
	default:
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	r.h.ServeHTTP(rec, req)
	return rec, true
}

// FuzzBMC fuzzes the BMC routes' parameters, credentials and JSON/form
// bodies: whatever arrives, the answer is one of the Ruby proxy's, typed
// JSON, a 200 is valid JSON, a power status is exactly "on" or "off", and
// only valid commands on held nodes reach the broker.
func FuzzBMC(f *testing.F) {
	r := newFuzzRig(f)
	f.Add("GET", "/bmc/10.0.0.5/chassis/power/status", "", "", "")
	f.Add("PUT", "/bmc/10.0.0.6/chassis/power/on", "application/x-www-form-urlencoded", "action=on", "")
	f.Add("PUT", "/bmc/10.0.0.5/chassis/config/bootdevice/pxe", "application/x-www-form-urlencoded", "function=bootdevice&device=pxe&persistent=true", "")
	f.Add("PUT", "/bmc/10.0.0.7/chassis/power/cycle", "application/json", `{"bmc_provider":"ipmitool"}`, "Basic YWNtZTp4")
	f.Add("GET", "/bmc/%2e%2e/lan/ip", "", "", "none")
	f.Fuzz(func(t *testing.T, method, path, ct, body, auth string) {
		if !strings.HasPrefix(path, "/bmc") {
			path = "/bmc/" + path
		}
		rec, ok := r.serve(method, path, ct, body, auth)
		if !ok {
			return
		}
		if !slices.Contains([]int{200, 400, 401, 404, 415, 501}, rec.Code) {
			t.Fatalf("%s %s: status %d %q", method, path, rec.Code, rec.Body)
		}
		if got := rec.Header().Get("Content-Type"); got != "application/json" {
			t.Fatalf("%s %s: Content-Type %q", method, path, got)
		}
		if rec.Code == 200 {
			var v map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
				t.Fatalf("%s %s: 200 with invalid JSON %q", method, path, rec.Body)
			}
			if v["action"] == "status" && strings.Contains(path, "/chassis/power/") && v["result"] != "on" && v["result"] != "off" {
				t.Fatalf("%s %s: power status %v", method, path, v["result"])
			}
		}
		for _, a := range r.b.takeActs() {
			f := strings.Fields(a)
			switch {
			case f[0] != "node-1" && f[0] != "node-2":
				t.Fatalf("a command reached a node the tenant does not hold: %q", a)
			case len(f) == 2 && !slices.Contains(powerActions, f[1]):
				t.Fatalf("invalid power action reached the broker: %q", a)
			case len(f) == 4 && !slices.Contains(bootDevices, f[2]):
				t.Fatalf("invalid boot device reached the broker: %q", a)
			}
		}
	})
}

// FuzzM2 fuzzes the M2 plugin's routes, query parameters and JSON/form
// bodies: answers are JSON or text, never a 500, and a JSON answer parses.
func FuzzM2(f *testing.F) {
	r := newFuzzRig(f)
	f.Add("GET", "/m2/iscsi_target?disk=web1&image=debian-12", "", "")
	f.Add("POST", "/m2/disks", "application/json", `{"name":"web1","image":"debian-12"}`)
	f.Add("POST", "/m2/disks/web1/attach", "application/x-www-form-urlencoded", "node=10.0.0.5")
	f.Add("GET", "/m2/boot/"+stubToken, "", "")
	f.Add("DELETE", "/m2/snapshots/%2F..", "", "")
	f.Fuzz(func(t *testing.T, method, path, ct, body string) {
		if p, _, _ := strings.Cut(path, "?"); p != "/m2" && !strings.HasPrefix(p, "/m2/") {
			path = "/m2/" + path
		}
		rec, ok := r.serve(method, path, ct, body, "none")
		if !ok {
			return
		}
		if rec.Code >= 500 && rec.Code != 502 && rec.Code != 504 {
			t.Fatalf("%s %s: status %d %q", method, path, rec.Code, rec.Body)
		}
		switch ct := rec.Header().Get("Content-Type"); {
		case ct == "application/json":
			if !json.Valid(rec.Body.Bytes()) {
				t.Fatalf("%s %s: invalid JSON %q", method, path, rec.Body)
			}
		case ct == "text/plain; charset=utf-8" && rec.Code == 200, ct == "" && rec.Code == 204:
		default:
			t.Fatalf("%s %s: %d with Content-Type %q", method, path, rec.Code, ct)
		}
	})
}
