package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance"
	"github.com/malleable-cloud/malleable/appliance/allocator/embedded"
	"github.com/malleable-cloud/malleable/appliance/allocator/node"
	"github.com/malleable-cloud/malleable/appliance/bmc"
	"github.com/malleable-cloud/malleable/appliance/bmc/bmctest"
	"github.com/malleable-cloud/malleable/appliance/client"
	"github.com/malleable-cloud/malleable/appliance/lease"
	"github.com/malleable-cloud/malleable/appliance/m2/server"
	"github.com/malleable-cloud/malleable/appliance/power"
	"github.com/malleable-cloud/malleable/appliance/reconcile"
	"github.com/malleable-cloud/malleable/appliance/secrets"
	"github.com/malleable-cloud/malleable/appliance/storage"
	"github.com/malleable-cloud/malleable/appliance/store"
)

// The real end-to-end tests (real_test.go) run the same in-process
// appliance as rig_test.go, but with real ends: IPMI to ipmi_sim BMCs whose
// power is a qemu process, and, for storage, a real tgtd.

// simPower is embedded.NodePower over real IPMI to simulated BMCs, by node
// name: what the embedded allocator's own IPMI backend does, with
// each node's BMC target kept here rather than in the store and the secret
// store.
type simPower struct {
	ipmi *bmc.IPMI
	sims map[string]*bmctest.Sim
}

var _ embedded.NodePower = simPower{}

func (p simPower) target(name string) (bmc.Target, error) {
	s, ok := p.sims[name]
	if !ok {
		return bmc.Target{}, fmt.Errorf("node %s: %w", name, node.ErrNoPowerControl)
	}
	return s.Target(), nil
}

func (p simPower) PowerStatus(ctx context.Context, node string) (bool, error) {
	t, err := p.target(node)
	if err != nil {
		return false, err
	}
	return p.ipmi.PowerStatus(ctx, t)
}

func (p simPower) Power(ctx context.Context, node string, a node.PowerAction) error {
	t, err := p.target(node)
	if err != nil {
		return err
	}
	return p.ipmi.Power(ctx, t, string(a))
}

func (p simPower) SetBootDevice(ctx context.Context, node string, d node.BootDevice, persistent bool) error {
	t, err := p.target(node)
	if err != nil {
		return err
	}
	return p.ipmi.SetBootDevice(ctx, t, string(d), persistent)
}

// realConfig is what newRealAppliance wires in.
type realConfig struct {
	start time.Time
	// sims are the nodes' BMCs by node name; each node is registered with
	// its BMC's address.
	sims map[string]*bmctest.Sim
	// portal is the iSCSI portal written into boot scripts, and targets
	// where the M2 backend puts its targets.
	portal  string
	targets server.Targets
	log     *slog.Logger
}

// newRealAppliance starts an appliance over real IPMI (and whatever
// targets cfg names), with the nodes of cfg.sims registered. Its broker
// asks the BMC on every status read.
func newRealAppliance(t *testing.T, cfg realConfig) *applianceRig {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.Open(ctx, filepath.Join(dir, "malleable.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := &clock{now: cfg.start}
	// Loopback answers in milliseconds; the long timeout keeps a loaded
	// machine (-race, qemu under TCG) from retransmitting commands.
	ipmi := bmc.New(bmc.Options{Timeout: 2 * time.Second, Retries: 2, Logger: cfg.log.With("component", "bmc")})
	alloc := &embedded.Allocator{Members: st, BMC: simPower{ipmi: ipmi, sims: cfg.sims},
		IsOwned:    func(err error) bool { return errors.Is(err, store.ErrAllocated) },
		IsNotFound: func(err error) bool { return errors.Is(err, store.ErrNotFound) }}
	vols, err := storage.NewFile(filepath.Join(dir, "volumes"), storage.FileOptions{Logger: cfg.log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vols.Close() })
	m2b, err := server.Open(ctx, server.Config{DB: filepath.Join(dir, "m2.db"), IQNPrefix: "iqn.2026-11.org.example",
		Portal: cfg.portal, Storage: vols, Targets: cfg.targets, Secrets: secrets.NewMemory(), Logger: cfg.log, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m2b.Close() })
	rec := &reconcile.Reconciler{Store: st, Allocator: alloc, Log: cfg.log, Now: clk.Now, Concurrency: 2,
		Machine: &lease.Machine{Hardware: hardware{alloc}, Disks: unbind{m2b}, Journal: store.Journal{Store: st, Now: clk.Now},
			Project:     func(t string) string { return "malleable-" + t },
			MaxAttempts: 2, PowerOffTimeout: 15 * time.Second, PollInterval: 50 * time.Millisecond}}
	srv := httptest.NewServer(appliance.Parts{Store: st, Limits: lease.DefaultLimits(), Token: adminToken, Logger: cfg.log,
		Now: clk.Now, Allocator: alloc, Reconciler: rec, M2: m2b, Power: power.New(alloc, 0, clk.Now),
		Project: rec.Machine.Project}.Handler())
	t.Cleanup(srv.Close)
	a := &applianceRig{t: t, clock: clk, rec: rec, url: srv.URL, admin: client.New(srv.URL, adminToken)}
	for i, name := range sortedKeys(cfg.sims) {
		s := cfg.sims[name]
		if _, err := a.admin.CreateNode(ctx, client.NodeSpec{Name: name, MACs: []string{fmt.Sprintf("52:54:00:00:00:%02x", i+1)},
			BMC: &client.BMCSpec{Host: s.Host, Port: s.Port, User: s.User}}); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

// lease books node for tenant from start for d.
func (a *applianceRig) lease(node, tenant string, start time.Time, d time.Duration) {
	a.t.Helper()
	if _, err := a.admin.CreateLease(context.Background(), client.LeaseSpec{Node: node, Tenant: tenant,
		Start: start.Format(time.RFC3339), End: start.Add(d).Format(time.RFC3339)}); err != nil {
		a.t.Fatal(err)
	}
}

// boundary moves the clock to at and runs a reconcile pass, which must
// complete want handovers.
func (a *applianceRig) boundary(at time.Time, want int) {
	a.t.Helper()
	a.clock.Set(at)
	start := time.Now()
	if res := a.reconcile(); res.Completed != want {
		a.t.Fatalf("reconcile at %s: %+v, want %d completed", at.Format(time.RFC3339), res, want)
	}
	a.t.Logf("reconcile at %s: %d handover(s) in %v", at.Format(time.RFC3339), want, time.Since(start).Round(time.Millisecond))
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// chassisSets returns the chassis commands a BMC received ("set power 1",
// "set boot pxe"), without the status polls;
// an IPMI retransmission (the same command again, sent because a reply was
// late on a loaded machine) counted once.
func chassisSets(s *bmctest.Sim) []string {
	var out []string
	for _, c := range s.Commands() {
		if c.Op != "set" {
			continue
		}
		cmd := c.Op + " " + c.Param + " " + c.Value
		if len(out) > 0 && out[len(out)-1] == cmd {
			continue
		}
		out = append(out, cmd)
	}
	return out
}

// waitPower waits until the machine behind s is on (or off).
func waitPower(t *testing.T, s *bmctest.Sim, on bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := s.WaitPower(ctx, on); err != nil {
		t.Fatal(err)
	}
}

// tenantBMCAddress is node's tenant-facing BMC address: the :host its
// tenants' Foremans use.
func tenantBMCAddress(t *testing.T, a *applianceRig, node string) string {
	t.Helper()
	n, err := a.admin.Node(context.Background(), node)
	if err != nil || n.TenantBMCAddress == "" {
		t.Fatalf("node %s: %+v %v", node, n, err)
	}
	return n.TenantBMCAddress
}
