package smartproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/smartproxy/proxytest"
)

// TestTLSClientCertificates: Foreman's certificate (trusted CN, from the
// configured CA) is accepted; another CN from the same CA, or no
// certificate, gets 403 on the authorized routes; a certificate from
// another CA is refused during the handshake. /features and /version
// need no certificate.
func TestTLSClientCertificates(t *testing.T) {
	h := newHarness(t, nil)
	foreign := proxytest.NewCA(t, "Someone else's CA")
	tests := map[string]struct {
		client     *http.Client
		path       string
		wantStatus int
		wantBody   string
		wantTLSErr bool
	}{
		"trusted CN, BMC":             {h.foreman, "/bmc/10.0.0.5/chassis/power/status", 200, `{"action":"status","result":"on"}`, false},
		"trusted CN, upper case":      {h.ca.Client(h.ca.ClientCert(t, "FOREMAN.Acme.Example")), "/v2/features", 200, `{"bmc":`, false},
		"trusted CN, M2":              {h.foreman, "/m2/test", 200, "test", false},
		"untrusted CN, BMC":           {h.ca.Client(h.ca.ClientCert(t, "foreman.globex.example")), "/bmc/10.0.0.5/chassis/power/status", 403, "Untrusted client foreman.globex.example", false},
		"untrusted CN, trusted SAN":   {h.ca.Client(h.ca.ClientCert(t, "x.example", proxytest.ForemanCN)), "/v2/features", 403, "Untrusted client x.example", false},
		"untrusted CN, M2":            {h.ca.Client(h.ca.ClientCert(t, "foreman.globex.example")), "/m2/image_list", 403, `{"error":"Untrusted client foreman.globex.example attempted to access /image_list.`, false},
		"no certificate, BMC":         {h.ca.Client(), "/bmc/10.0.0.5/chassis/power/status", 403, "could not read client cert from environment", false},
		"no certificate, v2":          {h.ca.Client(), "/v2/features", 403, "could not read client cert from environment", false},
		"no certificate, M2":          {h.ca.Client(), "/m2/disks", 403, `{"error":"could not read client cert from environment"}`, false},
		"no certificate, features":    {h.ca.Client(), "/features", 200, `["bmc","m2"]`, false},
		"no certificate, version":     {h.ca.Client(), "/version", 200, `{"version":"1.4.0"`, false},
		"no certificate, boot script": {h.ca.Client(), "/m2/boot/" + stubToken, 200, "#!ipxe", false},
		"no CN":                       {h.ca.Client(h.ca.ClientCert(t, "")), "/bmc/10.0.0.5/chassis/power/status", 403, "could not read CN from the client certificate", false},
		"wrong CA, features":          {insistent(h, foreign.ClientCert(t, proxytest.ForemanCN)), "/features", 0, "", true},
		"wrong CA, BMC":               {insistent(h, foreign.ClientCert(t, proxytest.ForemanCN)), "/bmc/10.0.0.5/chassis/power/status", 0, "", true},
		"Go client skips a wrong CA":  {h.ca.Client(foreign.ClientCert(t, proxytest.ForemanCN)), "/bmc/10.0.0.5/chassis/power/status", 403, "could not read client cert from environment", false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			req := proxytest.ForemanRequest(h.ts.URL, "GET", tc.path, "")
			req.SetBasicAuth(bmcUser, proxytest.BMCPassword)
			resp, err := tc.client.Do(req)
			if tc.wantTLSErr {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("a certificate from another CA was accepted: %d", resp.StatusCode)
				}
				if !isTLSRefusal(err) {
					t.Fatalf("want a TLS handshake refusal, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			status, body := resp.StatusCode, string(b)
			if status != tc.wantStatus || !strings.HasPrefix(body, tc.wantBody) {
				t.Errorf("%s: %d %q, want %d %q…", tc.path, status, body, tc.wantStatus, tc.wantBody)
			}
		})
	}
}

// insistent returns a client that sends cert whatever CAs the server asks
// for, as Foreman's RestClient (OpenSSL) does; Go's own client would
// rather send none.
func insistent(h *harness, cert tls.Certificate) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: h.ca.Pool(), MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }}}}
}

// isTLSRefusal reports whether err is the server refusing the client's
// certificate during the handshake (a TLS alert, or the connection reset
// while the client reads it).
func isTLSRefusal(err error) bool {
	var alert tls.AlertError
	var ce *tls.CertificateVerificationError
	s := err.Error()
	return errors.As(err, &alert) || errors.As(err, &ce) || strings.Contains(s, "bad certificate") ||
		strings.Contains(s, "unknown certificate authority") || strings.Contains(s, "connection reset")
}

// TestTLSServerSettings: TLS 1.1 is refused; the server presents the
// configured certificate.
func TestTLSServerSettings(t *testing.T) {
	h := newHarness(t, nil)
	addr := strings.TrimPrefix(h.ts.URL, "https://")
	_, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: h.ca.Pool(), MaxVersion: tls.VersionTLS11, MinVersion: tls.VersionTLS10})
	if err == nil {
		t.Fatal("a TLS 1.1 handshake succeeded")
	}
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: h.ca.Pool(), ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if cn := conn.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "proxy.acme.example" {
		t.Errorf("server certificate CN = %q", cn)
	}
}

// fakeResolver maps addresses to names and back.
type fakeResolver struct{ ptr, a map[string][]string }

func (f fakeResolver) LookupAddr(_ context.Context, addr string) ([]string, error) {
	if n, ok := f.ptr[addr]; ok {
		return n, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: addr, IsNotFound: true}
}

func (f fakeResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	if a, ok := f.a[strings.ToLower(host)]; ok { // DNS names are case-insensitive
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// TestRunListeners runs the proxy's own listeners: HTTPS, plain HTTP with
// clients named by verified reverse DNS, and the boot-only listener.
func TestRunListeners(t *testing.T) {
	ca := proxytest.NewCA(t, "Malleable test CA")
	cfg := testConfig(t, t.TempDir(), ca)
	cfg.Proxy.HTTPListen = "127.0.0.1:0"
	cfg.M2.BootListen = "127.0.0.1:0"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	res := fakeResolver{
		ptr: map[string][]string{"127.0.0.1": {"Foreman.acme.example."}},
		a:   map[string][]string{"foreman.acme.example": {"127.0.0.1"}},
	}
	srv, err := New(cfg, Options{Broker: newFakeBroker(), Storage: newStubStorage(), Resolver: res, Logger: proxytest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan Addrs, 1)
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, func(a Addrs) { addrs <- a }) }()
	var a Addrs
	select {
	case a = <-addrs:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	get := func(c *http.Client, url string) (int, string) {
		req := proxytest.ForemanRequest(url, "GET", "", "")
		req.SetBasicAuth(bmcUser, proxytest.BMCPassword)
		status, _, body := proxytest.Do(t, c, req)
		return status, body
	}
	https := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(),
		Certificates: []tls.Certificate{ca.ClientCert(t, proxytest.ForemanCN)}}}}
	for _, tc := range []struct {
		c          *http.Client
		url        string
		wantStatus int
		wantBody   string
	}{
		{https, "https://" + a.HTTPS + "/bmc/10.0.0.5/chassis/power/status", 200, `{"action":"status","result":"on"}`},
		{http.DefaultClient, "http://" + a.HTTP + "/bmc/10.0.0.5/chassis/power/status", 200, `{"action":"status","result":"on"}`},
		{http.DefaultClient, "http://" + a.HTTP + "/v2/features", 200, `{"bmc":{"http_enabled":true,"https_enabled":true`},
		{http.DefaultClient, "http://" + a.Boot + "/m2/boot/" + stubToken, 200, "#!ipxe"},
		{http.DefaultClient, "http://" + a.Boot + "/m2/boot/" + strings.Repeat("0", 64), 404, `{"error":"no boot script for this token"}`},
		{http.DefaultClient, "http://" + a.Boot + "/bmc/10.0.0.5/chassis/power/status", 404, `{"error":"this listener serves only GET /m2/boot/<token>"}`},
		{http.DefaultClient, "http://" + a.Boot + "/features", 404, `{"error":"this listener serves only`},
	} {
		if status, body := get(tc.c, tc.url); status != tc.wantStatus || !strings.HasPrefix(body, tc.wantBody) {
			t.Errorf("GET %s: %d %q, want %d %q…", tc.url, status, body, tc.wantStatus, tc.wantBody)
		}
	}
	// An HTTP client whose reverse DNS does not resolve back is refused.
	res.a["foreman.acme.example"] = []string{"192.0.2.1"}
	if status, body := get(http.DefaultClient, "http://"+a.HTTP+"/v2/features"); status != 403 ||
		body != "untrusted client has no matching forward DNS lookup - Foreman.acme.example (127.0.0.1)" {
		t.Errorf("forward-verify failure: %d %q", status, body)
	}
	delete(res.ptr, "127.0.0.1")
	if status, body := get(http.DefaultClient, "http://"+a.HTTP+"/v2/features"); status != 403 ||
		!strings.HasPrefix(body, "unable to resolve hostname for ip address 127.0.0.1") {
		t.Errorf("no reverse DNS: %d %q", status, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if _, err := net.DialTimeout("tcp", a.HTTPS, time.Second); err == nil {
		t.Error("the HTTPS listener still accepts after shutdown")
	}
}

// TestRunListenError: a busy address is reported, naming the listener.
func TestRunListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ca := proxytest.NewCA(t, "Malleable test CA")
	cfg := testConfig(t, t.TempDir(), ca)
	cfg.M2.BootListen = ln.Addr().String()
	srv, err := New(cfg, Options{Broker: newFakeBroker(), Storage: newStubStorage()})
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Run(context.Background(), nil)
	if want := fmt.Sprintf("listen boot on %s", ln.Addr()); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Run = %v, want %q", err, want)
	}
}
