// Package pkitest is the contract test suite of pki.Authority: the
// embedded Local and Vault's PKI run the same Run. Import it from tests
// only.
package pkitest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/pki"
)

// Inventory is implemented by authorities (or test wrappers around them)
// that can list the serials they issued; Run then also checks that a
// refused request issued nothing.
type Inventory interface {
	Issued(ctx context.Context) ([]string, error)
}

// Run checks that the authorities made by newAuthority meet the
// pki.Authority contract. newAuthority is called once per subtest and may
// return authorities sharing a CA, but the tenants the suite uses
// ("acme", "initech") must be free to use.
func Run(t *testing.T, newAuthority func(t *testing.T) pki.Authority) {
	tests := []struct {
		name string
		fn   func(*testing.T, pki.Authority)
	}{
		{"server certificate", testServer},
		{"client certificate", testClient},
		{"normalised names", testNormalised},
		{"concurrent issue", testConcurrent},
		{"revoke", testRevoke},
		{"revoke unknown", testRevokeUnknown},
		{"invalid requests", testInvalid},
		{"context done", testContextDone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newAuthority(t)) })
	}
}

// Issued is a parsed certificate with what the authority answered.
type Issued struct {
	pki.Certificate
	Leaf *x509.Certificate
	CA   *x509.Certificate
}

// Check parses c and fails t unless it is a well-formed answer to req:
// the key is a new ECDSA P-256 key matching the certificate, the chain
// verifies against ca (the authority's CA()) for req's usage, every
// requested name and address is a SAN, and Serial and NotAfter describe
// the certificate.
func Check(t *testing.T, c pki.Certificate, req pki.Request, ca []byte) Issued {
	t.Helper()
	pair, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		t.Fatalf("key does not match the certificate: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		t.Errorf("private key is %T, want ECDSA P-256", pair.PrivateKey)
	}
	caCert := parseCert(t, ca)
	if !bytes.Equal(parseCert(t, c.CAPEM).Raw, caCert.Raw) {
		t.Errorf("Certificate.CAPEM is not the CA() certificate")
	}
	usage := x509.ExtKeyUsageServerAuth
	if req.Usage == pki.ClientAuth {
		usage = x509.ExtKeyUsageClientAuth
	}
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	opts := x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}}
	if _, err := leaf.Verify(opts); err != nil {
		t.Errorf("chain does not verify for %v: %v", req.Usage, err)
	}
	if leaf.Subject.CommonName != strings.ToLower(req.CommonName) {
		t.Errorf("CN = %q, want %q", leaf.Subject.CommonName, req.CommonName)
	}
	for _, n := range req.DNSNames {
		if !slices.Contains(leaf.DNSNames, strings.ToLower(n)) {
			t.Errorf("DNS SANs %q lack %q", leaf.DNSNames, n)
		}
		opts := x509.VerifyOptions{Roots: roots, DNSName: n, KeyUsages: []x509.ExtKeyUsage{usage}}
		if _, err := leaf.Verify(opts); err != nil {
			t.Errorf("does not verify for host %q: %v", n, err)
		}
	}
	for _, ip := range req.IPs {
		if !slices.ContainsFunc(leaf.IPAddresses, ip.Equal) {
			t.Errorf("IP SANs %v lack %v", leaf.IPAddresses, ip)
		}
	}
	if want := hex.EncodeToString(leaf.SerialNumber.Bytes()); c.Serial != want {
		t.Errorf("Serial = %q, want %q (lower-case hex, no colons)", c.Serial, want)
	}
	if !c.NotAfter.Equal(leaf.NotAfter) {
		t.Errorf("NotAfter = %v, certificate says %v", c.NotAfter, leaf.NotAfter)
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = pki.DefaultTTL
	}
	// Loose bounds: the point is that TTL was applied, not the clock.
	if now := time.Now(); leaf.NotAfter.Before(now.Add(ttl/2)) || leaf.NotAfter.After(now.Add(ttl+time.Hour)) {
		t.Errorf("NotAfter %v is not about %s from now", leaf.NotAfter, ttl)
	}
	return Issued{Certificate: c, Leaf: leaf, CA: caCert}
}

func parseCert(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("not a PEM certificate: %.40q", b)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func issue(t *testing.T, a pki.Authority, req pki.Request) Issued {
	t.Helper()
	c, err := a.Issue(t.Context(), req)
	if err != nil {
		t.Fatalf("Issue(%+v): %v", req, err)
	}
	ca, err := a.CA(t.Context())
	if err != nil {
		t.Fatalf("CA: %v", err)
	}
	return Check(t, c, req, ca)
}

func testServer(t *testing.T, a pki.Authority) {
	req := pki.Request{Tenant: "acme", CommonName: "proxy.acme.test", DNSNames: []string{"proxy.acme.test", "acme-proxy", "localhost"},
		IPs: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}, Usage: pki.ServerAuth, TTL: 48 * time.Hour}
	got := issue(t, a, req)
	if !slices.Contains(got.Leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Errorf("ExtKeyUsage %v lacks ServerAuth", got.Leaf.ExtKeyUsage)
	}
	// A second certificate has its own key and serial.
	again := issue(t, a, req)
	if again.Serial == got.Serial || got.Leaf.PublicKey.(*ecdsa.PublicKey).Equal(again.Leaf.PublicKey) {
		t.Errorf("two Issue calls shared a serial or a key")
	}
	// Default TTL.
	issue(t, a, pki.Request{Tenant: "acme", CommonName: "proxy.acme.test", Usage: pki.ServerAuth})
	// An IP address as the CN, as `smart-proxy init --host 127.0.0.1` asks.
	ipCN := issue(t, a, pki.Request{Tenant: "acme", CommonName: "127.0.0.1", Usage: pki.ServerAuth, TTL: time.Hour})
	if !slices.ContainsFunc(ipCN.Leaf.IPAddresses, net.ParseIP("127.0.0.1").Equal) {
		t.Errorf("CN 127.0.0.1 is not an IP SAN: %v", ipCN.Leaf.IPAddresses)
	}
}

func pool(c *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c)
	return p
}

func testClient(t *testing.T, a pki.Authority) {
	req := pki.Request{Tenant: "initech", CommonName: "foreman.initech.test", Usage: pki.ClientAuth, TTL: 24 * time.Hour}
	got := issue(t, a, req)
	if !slices.Contains(got.Leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Errorf("ExtKeyUsage %v lacks ClientAuth", got.Leaf.ExtKeyUsage)
	}
	// A TLS handshake with it as the client certificate works.
	handshake(t, a, "initech", got)
}

// handshake runs a real mutual-TLS handshake: a server with a fresh
// server certificate from a, the client presenting c.
func handshake(t *testing.T, a pki.Authority, tenant string, client Issued) {
	t.Helper()
	srv := issue(t, a, pki.Request{Tenant: tenant, CommonName: "localhost", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Usage: pki.ServerAuth, TTL: time.Hour})
	srvPair, _ := tls.X509KeyPair(srv.CertPEM, srv.KeyPEM)
	cliPair, _ := tls.X509KeyPair(client.CertPEM, client.KeyPEM)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{srvPair},
		ClientCAs: pool(srv.CA), ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			peer <- err.Error()
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			peer <- err.Error()
			return
		}
		peer <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
	}()
	d := &tls.Dialer{Config: &tls.Config{RootCAs: pool(srv.CA), Certificates: []tls.Certificate{cliPair},
		ServerName: "localhost", MinVersion: tls.VersionTLS12}}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("mutual TLS with issued certificates: %v", err)
	}
	c.Close()
	if got := <-peer; got != client.Leaf.Subject.CommonName {
		t.Errorf("server saw client %q, want %q", got, client.Leaf.Subject.CommonName)
	}
}

func testNormalised(t *testing.T, a pki.Authority) {
	got := issue(t, a, pki.Request{Tenant: "acme", CommonName: "Proxy.ACME.test", DNSNames: []string{"PROXY.acme.test", "b.acme.test"},
		Usage: pki.ServerAuth, TTL: time.Hour})
	if got.Leaf.Subject.CommonName != "proxy.acme.test" {
		t.Errorf("CN = %q, want it lower-cased", got.Leaf.Subject.CommonName)
	}
	for _, n := range []string{"proxy.acme.test", "b.acme.test"} {
		if !slices.Contains(got.Leaf.DNSNames, n) {
			t.Errorf("DNS SANs %q lack %q", got.Leaf.DNSNames, n)
		}
	}
}

func testConcurrent(t *testing.T, a pki.Authority) {
	const n = 16
	var (
		mu      sync.Mutex
		serials = map[string]bool{}
		wg      sync.WaitGroup
	)
	for i := range n {
		wg.Go(func() {
			req := pki.Request{Tenant: "acme", CommonName: fmt.Sprintf("node-%d.acme.test", i), Usage: pki.ClientAuth, TTL: time.Hour}
			c, err := a.Issue(t.Context(), req)
			if err != nil {
				t.Errorf("Issue %d: %v", i, err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if serials[c.Serial] {
				t.Errorf("serial %s issued twice", c.Serial)
			}
			serials[c.Serial] = true
		})
	}
	wg.Wait()
	if len(serials) != n {
		t.Errorf("%d distinct serials from %d Issue calls", len(serials), n)
	}
}

// crl fetches, parses and checks the CRL's signature against the CA.
func crl(t *testing.T, a pki.Authority) *x509.RevocationList {
	t.Helper()
	b, err := a.CRL(t.Context())
	if err != nil {
		t.Fatalf("CRL: %v", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "X509 CRL" {
		t.Fatalf("CRL is not PEM \"X509 CRL\": %.40q", b)
	}
	rl, err := x509.ParseRevocationList(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := a.CA(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := rl.CheckSignatureFrom(parseCert(t, ca)); err != nil {
		t.Errorf("CRL not signed by the CA: %v", err)
	}
	return rl
}

func listed(rl *x509.RevocationList, serial string) bool {
	return slices.ContainsFunc(rl.RevokedCertificateEntries, func(e x509.RevocationListEntry) bool {
		return hex.EncodeToString(e.SerialNumber.Bytes()) == serial
	})
}

func testRevoke(t *testing.T, a pki.Authority) {
	ctx := t.Context()
	req := pki.Request{Tenant: "acme", CommonName: "proxy.acme.test", Usage: pki.ServerAuth, TTL: time.Hour}
	gone, kept := issue(t, a, req), issue(t, a, req)
	if listed(crl(t, a), gone.Serial) {
		t.Fatalf("serial %s in the CRL before Revoke", gone.Serial)
	}
	if err := a.Revoke(ctx, gone.Serial); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	rl := crl(t, a)
	if !listed(rl, gone.Serial) {
		t.Errorf("revoked serial %s not in the CRL", gone.Serial)
	}
	if listed(rl, kept.Serial) {
		t.Errorf("serial %s in the CRL but never revoked", kept.Serial)
	}
	// Idempotent, and in Vault's colon-separated upper-case form too.
	colons := strings.ToUpper(strings.Join(pairs(gone.Serial), ":"))
	for _, s := range []string{gone.Serial, colons} {
		if err := a.Revoke(ctx, s); err != nil {
			t.Errorf("Revoke(%q) again: %v", s, err)
		}
	}
	if n := count(crl(t, a), gone.Serial); n != 1 {
		t.Errorf("serial listed %d times after revoking it thrice", n)
	}
}

func pairs(s string) []string {
	var out []string
	for i := 0; i < len(s); i += 2 {
		out = append(out, s[i:i+2])
	}
	return out
}

func count(rl *x509.RevocationList, serial string) int {
	n := 0
	for _, e := range rl.RevokedCertificateEntries {
		if hex.EncodeToString(e.SerialNumber.Bytes()) == serial {
			n++
		}
	}
	return n
}

func testRevokeUnknown(t *testing.T, a pki.Authority) {
	issue(t, a, pki.Request{Tenant: "acme", CommonName: "x.acme.test", Usage: pki.ServerAuth, TTL: time.Hour})
	before := len(crl(t, a).RevokedCertificateEntries)
	if err := a.Revoke(t.Context(), "7e57c0ffee"); !errors.Is(err, pki.ErrNotFound) {
		t.Errorf("Revoke(unknown) = %v, want ErrNotFound", err)
	}
	for _, bad := range []string{"", "xyz", "12 34", "../etc", strings.Repeat("a", 65)} {
		if err := a.Revoke(t.Context(), bad); !errors.Is(err, pki.ErrInvalidRequest) {
			t.Errorf("Revoke(%q) = %v, want ErrInvalidRequest", bad, err)
		}
	}
	if after := len(crl(t, a).RevokedCertificateEntries); after != before {
		t.Errorf("CRL grew from %d to %d entries", before, after)
	}
}

func testInvalid(t *testing.T, a pki.Authority) {
	ok := pki.Request{Tenant: "acme", CommonName: "proxy.acme.test", Usage: pki.ServerAuth, TTL: time.Hour}
	with := func(f func(*pki.Request)) pki.Request { r := ok; f(&r); return r }
	tests := map[string]struct {
		req  pki.Request
		want string
	}{
		"empty tenant":        {with(func(r *pki.Request) { r.Tenant = "" }), "tenant"},
		"upper-case tenant":   {with(func(r *pki.Request) { r.Tenant = "Acme" }), "tenant"},
		"tenant digit first":  {with(func(r *pki.Request) { r.Tenant = "1acme" }), "tenant"},
		"tenant with a slash": {with(func(r *pki.Request) { r.Tenant = "acme/../x" }), "tenant"},
		"tenant too long":     {with(func(r *pki.Request) { r.Tenant = "a" + strings.Repeat("b", 31) }), "tenant"},
		"empty CN":            {with(func(r *pki.Request) { r.CommonName = "" }), "common name"},
		"CN with a space":     {with(func(r *pki.Request) { r.CommonName = "Foreman ACME" }), "common name"},
		"wildcard DNS name":   {with(func(r *pki.Request) { r.DNSNames = []string{"*.acme.test"} }), "DNS name"},
		"empty label":         {with(func(r *pki.Request) { r.DNSNames = []string{"a..acme.test"} }), "DNS name"},
		"leading hyphen":      {with(func(r *pki.Request) { r.DNSNames = []string{"-a.acme.test"} }), "DNS name"},
		"underscore":          {with(func(r *pki.Request) { r.DNSNames = []string{"a_b.acme.test"} }), "DNS name"},
		"label too long":      {with(func(r *pki.Request) { r.DNSNames = []string{strings.Repeat("a", 64) + ".test"} }), "DNS name"},
		"trailing dot":        {with(func(r *pki.Request) { r.DNSNames = []string{"acme.test."} }), "DNS name"},
		"bad IP":              {with(func(r *pki.Request) { r.IPs = []net.IP{{1, 2, 3}} }), "IP"},
		"TTL beyond the max":  {with(func(r *pki.Request) { r.TTL = pki.MaxTTL + time.Second }), "TTL"},
		"negative TTL":        {with(func(r *pki.Request) { r.TTL = -time.Hour }), "TTL"},
		"no usage":            {with(func(r *pki.Request) { r.Usage = 0 }), "usage"},
		"unknown usage":       {with(func(r *pki.Request) { r.Usage = 3 }), "usage"},
	}
	before := inventory(t, a)
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c, err := a.Issue(t.Context(), tc.req)
			if !errors.Is(err, pki.ErrInvalidRequest) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Issue = %v, want ErrInvalidRequest naming %q", err, tc.want)
			}
			if c.CertPEM != nil || c.KeyPEM != nil || c.Serial != "" {
				t.Errorf("a refused Issue returned a certificate")
			}
		})
	}
	if after := inventory(t, a); before != nil && !slices.Equal(before, after) {
		t.Errorf("refused requests issued certificates: %d serials before, %d after", len(before), len(after))
	}
}

// inventory lists the issued serials, sorted, or nil (with a log line)
// when a cannot list them.
func inventory(t *testing.T, a pki.Authority) []string {
	t.Helper()
	inv, ok := a.(Inventory)
	if !ok {
		t.Logf("%T has no Issued method: not checking that refused requests issued nothing", a)
		return nil
	}
	s, err := inv.Issued(t.Context())
	if err != nil {
		t.Fatalf("Issued: %v", err)
	}
	slices.Sort(s)
	return append([]string{}, s...)
}

func testContextDone(t *testing.T, a pki.Authority) {
	req := pki.Request{Tenant: "acme", CommonName: "proxy.acme.test", Usage: pki.ServerAuth, TTL: time.Hour}
	c := issue(t, a, req) // the CA exists
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := a.Issue(ctx, req); !errors.Is(err, context.Canceled) {
		t.Errorf("Issue with a cancelled context = %v", err)
	}
	if err := a.Revoke(ctx, c.Serial); !errors.Is(err, context.Canceled) {
		t.Errorf("Revoke with a cancelled context = %v", err)
	}
	if _, err := a.CA(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("CA with a cancelled context = %v", err)
	}
	if _, err := a.CRL(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("CRL with a cancelled context = %v", err)
	}
	if listed(crl(t, a), c.Serial) {
		t.Errorf("a Revoke with a cancelled context revoked %s", c.Serial)
	}
}
