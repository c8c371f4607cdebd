package store_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/store"
)

// TestTenantBMCAddresses: every node gets a stable, unique tenant-facing
// BMC address from the range; nodes without one (created before the
// migration) get one when the range is set; only names and tenant-facing
// addresses resolve, never real BMC addresses.
func TestTenantBMCAddresses(t *testing.T) {
	ctx := context.Background()
	s, path := newStore(t)
	now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	create := func(n inventory.Node) (inventory.Node, error) {
		if err := n.Normalize(); err != nil {
			t.Fatal(err)
		}
		return s.CreateNode(ctx, n, now)
	}
	bmc := inventory.BMC{Host: "127.0.0.1", Port: 6230, User: "admin"}
	a, err := create(inventory.Node{Name: "node-a", BMC: bmc})
	if err != nil || a.TenantBMCAddress != "198.18.0.1" {
		t.Fatalf("node-a: %+v %v", a, err)
	}
	bmc.Port = 6231 // a second BMC on the same IP: unambiguous for tenants now
	b, err := create(inventory.Node{Name: "node-b", BMC: bmc, TenantBMCAddress: "198.18.3.4"})
	if err != nil || b.TenantBMCAddress != "198.18.3.4" {
		t.Fatalf("node-b: %+v %v", b, err)
	}
	if _, err := create(inventory.Node{Name: "node-c", TenantBMCAddress: "198.18.3.4"}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("a taken address: %v", err)
	}
	for ref, want := range map[string]string{"node-a": "node-a", "198.18.0.1": "node-a", "198.18.3.4": "node-b"} {
		if n, err := s.FindNode(ctx, ref); err != nil || n.Name != want {
			t.Errorf("FindNode(%s) = %s, %v; want %s", ref, n.Name, err, want)
		}
	}
	for _, ref := range []string{"127.0.0.1", "127.0.0.1:6230", "198.18.0.2"} {
		if _, err := s.FindNode(ctx, ref); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("FindNode(%s) = %v, want not found", ref, err)
		}
	}

	// A node from before the migration has no address until the range is set.
	if _, err := rawDB(t, path).ExecContext(ctx, `UPDATE nodes SET tenant_bmc_address = '' WHERE name = 'node-a'`); err != nil {
		t.Fatal(err)
	}
	small := netip.MustParsePrefix("10.99.0.0/30") // two usable addresses
	if n, err := s.SetTenantBMCRange(ctx, small); err != nil || n != 1 {
		t.Fatalf("SetTenantBMCRange: %d %v", n, err)
	}
	if n, _ := s.GetNode(ctx, "node-a"); n.TenantBMCAddress != "10.99.0.1" {
		t.Errorf("node-a got %q", n.TenantBMCAddress)
	}
	if n, _ := s.GetNode(ctx, "node-b"); n.TenantBMCAddress != "198.18.3.4" {
		t.Errorf("node-b's address changed to %q", n.TenantBMCAddress)
	}
	if n, err := create(inventory.Node{Name: "node-c"}); err != nil || n.TenantBMCAddress != "10.99.0.2" {
		t.Fatalf("node-c: %+v %v", n, err)
	}
	if _, err := create(inventory.Node{Name: "node-d"}); !errors.Is(err, store.ErrExhausted) {
		t.Fatalf("a full range: %v", err)
	}
	if _, err := s.SetTenantBMCRange(ctx, netip.MustParsePrefix("10.99.0.1/24")); err == nil {
		t.Error("a range with host bits was accepted")
	}
}
