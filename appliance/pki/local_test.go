package pki_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/pki"
	"github.com/malleable-cloud/malleable/appliance/pki/pkitest"
	"github.com/malleable-cloud/malleable/appliance/secrets"
)

// listStore is a secrets store Local's tests can list.
type listStore interface {
	pki.SecretStore
	List(ctx context.Context, prefix string) ([]string, error)
}

// inventoried is a Local that can list its issued serials for pkitest.
type inventoried struct {
	*pki.Local
	store listStore
}

func (a inventoried) Issued(ctx context.Context) ([]string, error) {
	paths, err := a.store.List(ctx, "pki/issued")
	for i, p := range paths {
		paths[i] = strings.TrimPrefix(p, "pki/issued/")
	}
	return paths, err
}

func TestLocalMemory(t *testing.T) {
	pkitest.Run(t, func(t *testing.T) pki.Authority {
		s := secrets.NewMemory()
		return inventoried{pki.NewLocal(s, time.Now), s}
	})
}

func TestLocalFileStore(t *testing.T) {
	pkitest.Run(t, func(t *testing.T) pki.Authority {
		s, err := secrets.OpenFile(filepath.Join(t.TempDir(), "secrets"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return inventoried{pki.NewLocal(s, time.Now), s}
	})
}

// TestLocalPersists: a second Local over the same store uses the same CA,
// knows the serials the first issued, and keeps its revocations.
func TestLocalPersists(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s, err := secrets.OpenFile(filepath.Join(dir, "secrets"))
	if err != nil {
		t.Fatal(err)
	}
	first := pki.NewLocal(s, time.Now)
	c, err := first.Issue(ctx, pki.Request{Tenant: "acme", CommonName: "proxy.acme.test", Usage: pki.ServerAuth, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := first.Issue(ctx, pki.Request{Tenant: "acme", CommonName: "old.acme.test", Usage: pki.ServerAuth, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Revoke(ctx, revoked.Serial); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s, err = secrets.OpenFile(filepath.Join(dir, "secrets"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	second := pki.NewLocal(s, time.Now)
	ca, err := second.CA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(ca) != string(c.CAPEM) {
		t.Errorf("the CA changed across a reopen")
	}
	if keys, _ := s.List(ctx, "pki/ca"); !slices.Equal(keys, []string{"pki/ca/cert", "pki/ca/key"}) {
		t.Errorf("CA kept at %q", keys)
	}
	crl, err := second.CRL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(crl), "X509 CRL") {
		t.Fatalf("CRL: %q", crl)
	}
	if err := second.Revoke(ctx, c.Serial); err != nil {
		t.Errorf("revoke a serial the first instance issued: %v", err)
	}
	if got, _ := s.List(ctx, "pki/revoked"); !slices.Equal(got, sortedPaths("pki/revoked/", c.Serial, revoked.Serial)) {
		t.Errorf("revoked records %q", got)
	}
}

func sortedPaths(dir string, serials ...string) []string {
	var out []string
	for _, s := range serials {
		out = append(out, dir+s)
	}
	slices.Sort(out)
	return out
}

// TestLocalCRLRefresh: the CRL is re-signed, with a higher number, once
// half its validity has passed, and still lists what was revoked.
func TestLocalCRLRefresh(t *testing.T) {
	ctx := t.Context()
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	l := pki.NewLocal(secrets.NewMemory(), clock)
	c, err := l.Issue(ctx, pki.Request{Tenant: "acme", CommonName: "a.acme.test", Usage: pki.ClientAuth, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Revoke(ctx, c.Serial); err != nil {
		t.Fatal(err)
	}
	first := parseCRL(t, l)
	if again := parseCRL(t, l); again.Number.Cmp(first.Number) != 0 {
		t.Errorf("CRL re-signed without need: number %v then %v", first.Number, again.Number)
	}
	mu.Lock()
	now = now.Add(4 * 24 * time.Hour)
	mu.Unlock()
	later := parseCRL(t, l)
	if later.Number.Cmp(first.Number) <= 0 || !later.ThisUpdate.Equal(now) || len(later.RevokedCertificateEntries) != 1 {
		t.Errorf("after 4 days: number %v (was %v), this update %v, %d entries",
			later.Number, first.Number, later.ThisUpdate, len(later.RevokedCertificateEntries))
	}
}

// TestLocalCorrupt: a damaged CA in the store is an error, never a new CA.
func TestLocalCorrupt(t *testing.T) {
	ctx := t.Context()
	s := secrets.NewMemory()
	if _, err := pki.NewLocal(s, time.Now).CA(ctx); err != nil {
		t.Fatal(err)
	}
	other := secrets.NewMemory()
	if _, err := pki.NewLocal(other, time.Now).CA(ctx); err != nil {
		t.Fatal(err)
	}
	foreignKey, _ := other.Get(ctx, "pki/ca/key")
	if err := s.Put(ctx, "pki/ca/key", foreignKey); err != nil {
		t.Fatal(err)
	}
	before, _ := s.Get(ctx, "pki/ca/cert")
	_, err := pki.NewLocal(s, time.Now).Issue(ctx, pki.Request{Tenant: "acme", CommonName: "a.test", Usage: pki.ServerAuth})
	if !errors.Is(err, pki.ErrCorrupt) {
		t.Errorf("Issue with a mismatched CA key = %v, want ErrCorrupt", err)
	}
	if after, _ := s.Get(ctx, "pki/ca/cert"); string(after) != string(before) {
		t.Errorf("the CA certificate was replaced")
	}
}
