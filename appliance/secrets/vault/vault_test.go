package vault

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/malleable-cloud/malleable/appliance/pki"
	"github.com/malleable-cloud/malleable/appliance/pki/pkitest"
	"github.com/malleable-cloud/malleable/appliance/secrets"
	"github.com/malleable-cloud/malleable/appliance/secrets/secretstest"
	"github.com/malleable-cloud/malleable/appliance/secrets/vault/vaulttest"
)

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// tWriter sends log lines to t.Log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// connect logs in to srv with cfg (Address filled in) and closes the
// client when t ends.
func connect(t *testing.T, srv *vaulttest.Server, cfg Config) *Client {
	t.Helper()
	cfg.Address = srv.Addr
	if cfg.Token == "" && cfg.TokenFile == "" && cfg.RoleID == "" {
		cfg.Token = srv.RootToken
	}
	c, err := Connect(t.Context(), cfg, testLog(t))
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestStoreContract runs the secrets.Store suite against a real dev
// Vault; each subtest has a Root of its own.
func TestStoreContract(t *testing.T) {
	srv := vaulttest.Start(t)
	var n atomic.Int64
	secretstest.Run(t, func(t *testing.T) secrets.Store {
		return connect(t, srv, Config{Root: fmt.Sprintf("contract-%d", n.Add(1))}).Store()
	})
}

// inventoried lists the serials a mount issued, for pkitest.
type inventoried struct {
	*Authority
}

func (a inventoried) Issued(ctx context.Context) ([]string, error) {
	sec, err := a.c.api.Logical().ListWithContext(ctx, a.mount+"/certs")
	if err != nil || sec == nil {
		return nil, err
	}
	var out []string
	keys, _ := sec.Data["keys"].([]any)
	for _, k := range keys {
		s, _ := k.(string)
		out = append(out, s)
	}
	return out, nil
}

// TestAuthorityContract runs the pki.Authority suite against Vault's PKI;
// each subtest has a mount of its own, which Connect's first use enables.
func TestAuthorityContract(t *testing.T) {
	srv := vaulttest.Start(t)
	var n atomic.Int64
	pkitest.Run(t, func(t *testing.T) pki.Authority {
		return inventoried{connect(t, srv, Config{PKIMount: fmt.Sprintf("pki-%d", n.Add(1))}).Authority()}
	})
}

// TestStoreLayout: what lands in Vault is one base64 field under
// <mount>/data/<root>/<path>, and Delete leaves no metadata behind.
func TestStoreLayout(t *testing.T) {
	srv := vaulttest.Start(t)
	c := connect(t, srv, Config{Root: "malleable"})
	s := c.Store()
	ctx := t.Context()
	if err := s.Put(ctx, "tenants/acme/foreman-admin", []byte("pw\x00")); err != nil {
		t.Fatal(err)
	}
	sec, err := c.api.Logical().ReadWithContext(ctx, "secret/data/malleable/tenants/acme/foreman-admin")
	if err != nil || sec == nil {
		t.Fatalf("raw read: %v %v", sec, err)
	}
	data, _ := sec.Data["data"].(map[string]any)
	if data["value"] != "cHcA" || len(data) != 1 {
		t.Errorf("stored data = %v, want {value: cHcA}", data)
	}
	// A soft delete by someone else reads as absent.
	if _, err := c.api.Logical().DeleteWithContext(ctx, "secret/data/malleable/tenants/acme/foreman-admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "tenants/acme/foreman-admin"); !errors.Is(err, secrets.ErrNotFound) {
		t.Errorf("Get of a soft-deleted secret = %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx, "tenants/acme/foreman-admin"); err != nil {
		t.Fatal(err)
	}
	if meta, _ := c.api.Logical().ReadWithContext(ctx, "secret/metadata/malleable/tenants/acme/foreman-admin"); meta != nil {
		t.Errorf("metadata left after Delete: %v", meta.Data)
	}
}

// TestAuthorityRoles: a tenant's role allows exactly the names issued for
// it, so tenant A's role cannot issue tenant B's names; the mount was
// enabled with the CA's max TTL.
func TestAuthorityRoles(t *testing.T) {
	srv := vaulttest.Start(t)
	c := connect(t, srv, Config{})
	a := c.Authority()
	ctx := t.Context()
	for _, r := range []pki.Request{
		{Tenant: "acme", CommonName: "proxy.acme.test", DNSNames: []string{"acme-proxy"}, Usage: pki.ServerAuth},
		{Tenant: "acme", CommonName: "foreman.acme.test", Usage: pki.ClientAuth},
		{Tenant: "initech", CommonName: "proxy.initech.test", Usage: pki.ServerAuth},
	} {
		if _, err := a.Issue(ctx, r); err != nil {
			t.Fatalf("Issue(%+v): %v", r, err)
		}
	}
	role, err := c.api.Logical().ReadWithContext(ctx, "pki/roles/tenant-acme")
	if err != nil || role == nil {
		t.Fatalf("read role: %v", err)
	}
	if got := fmt.Sprint(role.Data["allowed_domains"]); got != "[acme-proxy foreman.acme.test proxy.acme.test]" {
		t.Errorf("tenant-acme allows %s", got)
	}
	// Vault itself refuses initech's name under acme's role.
	_, err = c.api.Logical().WriteWithContext(ctx, "pki/issue/tenant-acme", map[string]any{"common_name": "proxy.initech.test"})
	if err == nil {
		t.Errorf("tenant-acme's role issued proxy.initech.test")
	}
	mc, err := c.api.Sys().MountConfigWithContext(ctx, "pki")
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(mc.MaxLeaseTTL)*time.Second < pki.CAValidity {
		t.Errorf("pki max lease TTL %ds", mc.MaxLeaseTTL)
	}
	// A second client finds the root CA and does not make another.
	b := connect(t, srv, Config{}).Authority()
	ca1, _ := a.CA(ctx)
	ca2, err := b.CA(ctx)
	if err != nil || string(ca1) != string(ca2) {
		t.Errorf("second client's CA differs: %v", err)
	}
	issuers, _ := c.api.Logical().ListWithContext(ctx, "pki/issuers")
	if keys, _ := issuers.Data["keys"].([]any); len(keys) != 1 {
		t.Errorf("%d issuers, want 1", len(keys))
	}
}

func TestConnectErrors(t *testing.T) {
	srv := vaulttest.Start(t)
	closed := closedAddr(t)
	dir := t.TempDir()
	emptyFile := filepath.Join(dir, "empty")
	os.WriteFile(emptyFile, nil, 0o600)
	tests := map[string]struct {
		cfg  Config
		want error
		text string
	}{
		"no address":        {Config{Token: "x"}, ErrConfig, "address"},
		"not a URL":         {Config{Address: "vault:8200", Token: "x"}, ErrConfig, "address"},
		"no login":          {Config{Address: srv.Addr}, ErrConfig, "exactly one"},
		"two logins":        {Config{Address: srv.Addr, Token: "x", TokenFile: emptyFile}, ErrConfig, "exactly one"},
		"role without file": {Config{Address: srv.Addr, RoleID: "r"}, ErrConfig, "secret_id_file"},
		"bad root":          {Config{Address: srv.Addr, Token: "x", Root: "../x"}, ErrConfig, "root"},
		"missing ca file":   {Config{Address: srv.Addr, Token: "x", CAFile: filepath.Join(dir, "none")}, ErrConfig, "ca_file"},
		"empty token file":  {Config{Address: srv.Addr, TokenFile: emptyFile}, ErrConfig, "empty"},
		"unreachable":       {Config{Address: "http://" + closed, Token: "x", Timeout: 2 * time.Second}, ErrUnreachable, closed},
		"wrong token":       {Config{Address: srv.Addr, Token: "not-a-token"}, ErrPermissionDenied, "token"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c, err := Connect(t.Context(), tc.cfg, testLog(t))
			if err == nil {
				c.Close()
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
				t.Errorf("Connect = %v, want %v mentioning %q", err, tc.want, tc.text)
			}
		})
	}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestSealed: a sealed Vault is ErrSealed, at Connect and on later calls.
func TestSealed(t *testing.T) {
	srv := vaulttest.Start(t)
	c := connect(t, srv, Config{})
	if err := c.api.Sys().SealWithContext(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Store().Get(t.Context(), "a"); !errors.Is(err, ErrSealed) {
		t.Errorf("Get on a sealed vault = %v, want ErrSealed", err)
	}
	if _, err := Connect(t.Context(), Config{Address: srv.Addr, Token: srv.RootToken}, testLog(t)); !errors.Is(err, ErrSealed) {
		t.Errorf("Connect to a sealed vault = %v, want ErrSealed", err)
	}
}

// TestVaultStopped: when Vault goes away mid-way, Store and Authority
// calls fail with ErrUnreachable within the Timeout; and a Vault that
// accepts connections but never answers fails the same way.
func TestVaultStopped(t *testing.T) {
	srv := vaulttest.Start(t)
	const timeout = 2 * time.Second
	c := connect(t, srv, Config{Timeout: timeout})
	s, a := c.Store(), c.Authority()
	ctx := t.Context()
	if err := s.Put(ctx, "bmc/node-1", []byte("pw")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Issue(ctx, pki.Request{Tenant: "acme", CommonName: "proxy.acme.test", Usage: pki.ServerAuth}); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	calls := map[string]func() error{
		"Get":    func() error { _, err := s.Get(ctx, "bmc/node-1"); return err },
		"Put":    func() error { return s.Put(ctx, "bmc/node-2", []byte("x")) },
		"Delete": func() error { return s.Delete(ctx, "bmc/node-1") },
		"List":   func() error { _, err := s.List(ctx, ""); return err },
		"Issue": func() error {
			_, err := a.Issue(ctx, pki.Request{Tenant: "acme", CommonName: "proxy.acme.test", Usage: pki.ServerAuth})
			return err
		},
		"Revoke": func() error { return a.Revoke(ctx, "0a0b") },
		"CA":     func() error { _, err := a.CA(ctx); return err },
		"CRL":    func() error { _, err := a.CRL(ctx); return err },
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			err := call()
			if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), srv.Addr) {
				t.Errorf("%s with vault stopped = %v, want ErrUnreachable naming %s", name, err, srv.Addr)
			}
			if d := time.Since(start); d > 2*timeout {
				t.Errorf("%s took %s, timeout is %s", name, d, timeout)
			}
		})
	}

	// A server that accepts and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
		}
	}()
	start := time.Now()
	_, err = Connect(ctx, Config{Address: "http://" + ln.Addr().String(), Token: "x", Timeout: timeout}, testLog(t))
	if !errors.Is(err, ErrUnreachable) {
		t.Errorf("Connect to a silent server = %v, want ErrUnreachable", err)
	}
	if d := time.Since(start); d > 2*timeout {
		t.Errorf("Connect to a silent server took %s, timeout is %s", d, timeout)
	}
}

// TestTokenRenewal: a renewable token with a 2 s TTL is renewed in the
// background, so the store still works long after that TTL.
func TestTokenRenewal(t *testing.T) {
	srv := vaulttest.Start(t)
	root := connect(t, srv, Config{})
	tok, err := root.api.Auth().Token().CreateWithContext(t.Context(), &api.TokenCreateRequest{
		TTL: "2s", ExplicitMaxTTL: "120s", Renewable: ptr(true), Policies: []string{"root"}})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "token")
	os.WriteFile(file, []byte(tok.Auth.ClientToken+"\n"), 0o600)
	c := connect(t, srv, Config{TokenFile: file, Root: "renew"})
	waitFor(t, 20*time.Second, "two renewals", func() bool { return c.stats.renewals.Load() >= 2 })
	time.Sleep(3 * time.Second) // past the original 2 s TTL several times over
	s := c.Store()
	if err := s.Put(t.Context(), "still/works", []byte("yes")); err != nil {
		t.Fatalf("Put after the first TTL: %v", err)
	}
	look, err := root.api.Auth().Token().LookupWithContext(t.Context(), tok.Auth.ClientToken)
	if err != nil {
		t.Fatalf("the token is gone: %v", err)
	}
	if look.Data["last_renewal_time"] == nil {
		t.Errorf("vault has no renewal of the token: %v", look.Data)
	}
}

// TestAppRoleRelogin: an AppRole token that reaches its max TTL is
// replaced by a new login, and the store keeps working.
func TestAppRoleRelogin(t *testing.T) {
	srv := vaulttest.Start(t)
	root := connect(t, srv, Config{})
	ctx := t.Context()
	if err := root.api.Sys().EnableAuthWithOptionsWithContext(ctx, "approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	if err := root.api.Sys().PutPolicyWithContext(ctx, "daemon", `path "secret/*" { capabilities = ["create", "read", "update", "delete", "list"] }`); err != nil {
		t.Fatal(err)
	}
	if _, err := root.api.Logical().WriteWithContext(ctx, "auth/approle/role/daemon", map[string]any{
		"token_ttl": "2s", "token_max_ttl": "4s", "token_policies": "daemon"}); err != nil {
		t.Fatal(err)
	}
	rid, err := root.api.Logical().ReadWithContext(ctx, "auth/approle/role/daemon/role-id")
	if err != nil {
		t.Fatal(err)
	}
	sid, err := root.api.Logical().WriteWithContext(ctx, "auth/approle/role/daemon/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "secret-id")
	os.WriteFile(file, []byte(sid.Data["secret_id"].(string)), 0o600)
	c := connect(t, srv, Config{RoleID: rid.Data["role_id"].(string), SecretIDFile: file, Root: "approle"})
	first := c.api.Token()
	waitFor(t, 30*time.Second, "a second login", func() bool { return c.stats.logins.Load() >= 3 })
	if c.api.Token() == first {
		t.Errorf("token unchanged after re-login")
	}
	s := c.Store()
	if err := s.Put(ctx, "after/relogin", []byte("v")); err != nil {
		t.Fatalf("Put after re-login: %v", err)
	}
	// Only the daemon's paths: PKI is outside its policy.
	if _, err := c.Authority().CA(ctx); !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("CA outside the policy = %v, want ErrPermissionDenied", err)
	}
}

func ptr[T any](v T) *T { return &v }

func waitFor(t *testing.T, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestTenantPolicy: a token holding only tenant acme's policy reads acme's
// secrets and issues through acme's role, and is refused initech's.
func TestTenantPolicy(t *testing.T) {
	srv := vaulttest.Start(t)
	admin := connect(t, srv, Config{})
	ctx := t.Context()
	if _, err := admin.TenantPolicy("Bad/../x"); err == nil {
		t.Errorf("policy for an invalid tenant name")
	}
	s := admin.Store()
	for _, p := range []string{"tenants/acme/foreman-admin", "tenants/initech/foreman-admin"} {
		if err := s.Put(ctx, p, []byte("pw")); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []pki.Request{
		{Tenant: "acme", CommonName: "proxy.acme.test", Usage: pki.ServerAuth},
		{Tenant: "initech", CommonName: "proxy.initech.test", Usage: pki.ServerAuth},
	} {
		if _, err := admin.Authority().Issue(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := admin.PutTenantPolicy(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	tok, err := admin.api.Auth().Token().CreateWithContext(ctx, &api.TokenCreateRequest{
		Policies: []string{"tenant-acme"}, NoDefaultPolicy: true, TTL: "10m"})
	if err != nil {
		t.Fatal(err)
	}
	// A lookup-self is outside the policy, so log in as the tenant by
	// hand rather than through Connect.
	tenant := &Client{cfg: admin.cfg, api: mustClone(t, admin.api), log: admin.log}
	tenant.api.SetToken(tok.Auth.ClientToken)
	ts := tenant.Store()
	if _, err := ts.Get(ctx, "tenants/acme/foreman-admin"); err != nil {
		t.Errorf("acme reads its own secret: %v", err)
	}
	if _, err := ts.Get(ctx, "tenants/initech/foreman-admin"); !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("acme reads initech's secret: %v, want ErrPermissionDenied", err)
	}
	if err := ts.Put(ctx, "tenants/acme/foreman-admin", []byte("x")); !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("acme writes: %v, want ErrPermissionDenied", err)
	}
	issue := func(role, cn string) error {
		_, err := tenant.api.Logical().WriteWithContext(ctx, "pki/issue/"+role, map[string]any{"common_name": cn})
		return tenant.classify(ctx, err)
	}
	if err := issue("tenant-acme", "proxy.acme.test"); err != nil {
		t.Errorf("acme issues through its role: %v", err)
	}
	if err := issue("tenant-initech", "proxy.initech.test"); !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("acme issues through initech's role: %v, want ErrPermissionDenied", err)
	}
}

func mustClone(t *testing.T, c *api.Client) *api.Client {
	t.Helper()
	cl, err := c.Clone()
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// TestLocalOverKV: the embedded CA also runs with its state in Vault's KV
// (the contract suite, each subtest under a Root of its own).
func TestLocalOverKV(t *testing.T) {
	srv := vaulttest.Start(t)
	var n atomic.Int64
	pkitest.Run(t, func(t *testing.T) pki.Authority {
		s := connect(t, srv, Config{Root: fmt.Sprintf("local-%d", n.Add(1))}).Store()
		return pki.NewLocal(s, time.Now)
	})
}
