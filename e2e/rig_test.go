package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance"
	"github.com/malleable-cloud/malleable/appliance/allocator/embedded"
	"github.com/malleable-cloud/malleable/appliance/allocator/node"
	"github.com/malleable-cloud/malleable/appliance/client"
	"github.com/malleable-cloud/malleable/appliance/iscsi"
	"github.com/malleable-cloud/malleable/appliance/lease"
	"github.com/malleable-cloud/malleable/appliance/m2/server"
	"github.com/malleable-cloud/malleable/appliance/power"
	"github.com/malleable-cloud/malleable/appliance/reconcile"
	"github.com/malleable-cloud/malleable/appliance/reconcile/pass"
	"github.com/malleable-cloud/malleable/appliance/secrets"
	"github.com/malleable-cloud/malleable/appliance/storage"
	"github.com/malleable-cloud/malleable/appliance/store"
)

// The end-to-end tests run the real appliance in-process: its API
// (appliance.Parts: the admin API, the broker and M2) over a real SQLite store, the reconciler
// with its handover state machine, the embedded allocator (embedded.Allocator,
// membership in the store), and the real M2 backend on file storage. Only
// the two ends are stand-ins: recordingBMC for the nodes' BMCs (it records
// every command that reaches one) and noTargets for tgtd.

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.now = t; c.mu.Unlock() }

// recordingBMC is embedded.NodePower over simulated BMCs: each node's power,
// and every command that reached a BMC.
type recordingBMC struct {
	mu   sync.Mutex
	on   map[string]bool
	cmds []string
}

var _ embedded.NodePower = (*recordingBMC)(nil)

func (b *recordingBMC) PowerStatus(_ context.Context, node string) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.on[node], nil
}

func (b *recordingBMC) Power(_ context.Context, node string, action node.PowerAction) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.on[node] = action == "on" || action == "cycle" || action == "reset" || (b.on[node] && action != "off" && action != "soft")
	b.cmds = append(b.cmds, node+" "+string(action))
	return nil
}

func (b *recordingBMC) SetBootDevice(_ context.Context, node string, device node.BootDevice, persistent bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cmds = append(b.cmds, fmt.Sprintf("%s boot %s persistent=%t", node, device, persistent))
	return nil
}

func (b *recordingBMC) commands() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.cmds...)
}

// hardware is what a handover needs, over the allocator (the appliance's
// own adapter is unexported).
type hardware struct{ a *embedded.Allocator }

func (h hardware) PowerOff(ctx context.Context, name string) error {
	return h.a.Power(ctx, name, node.PowerOff)
}
func (h hardware) PowerIsOn(ctx context.Context, node string) (bool, error) {
	return h.a.PowerStatus(ctx, node)
}
func (h hardware) Detach(ctx context.Context, node, project string) error {
	return h.a.Detach(ctx, node, project)
}
func (h hardware) Connect(ctx context.Context, node, project string) error {
	return h.a.Connect(ctx, node, project)
}

// unbind is the handover's disk step over the M2 backend.
type unbind struct{ b *server.Backend }

func (u unbind) UnbindNode(ctx context.Context, node, tenant string) error {
	return u.b.DetachNode(ctx, node, tenant)
}

// noTargets stands in for tgtd: the tests check access, not iSCSI.
type noTargets struct{}

func (noTargets) Apply(context.Context, iscsi.Target) error       { return nil }
func (noTargets) Remove(context.Context, string) error            { return nil }
func (noTargets) Reconcile(context.Context, []iscsi.Target) error { return nil }

// applianceRig is a running in-process appliance.
type applianceRig struct {
	t     testing.TB
	clock *clock
	bmc   *recordingBMC
	rec   *reconcile.Reconciler
	url   string
	admin *client.Client
}

const adminToken = "admin-token-0123456789abcdef"

// newApplianceRig starts an appliance whose broker serves power states
// from cache for cacheTTL (0: every read asks the BMC).
func newApplianceRig(t testing.TB, start time.Time, cacheTTL time.Duration, log *slog.Logger) *applianceRig {
	t.Helper()
	return newApplianceRigM2(t, start, cacheTTL, log, true)
}

// newApplianceRigM2 is newApplianceRig with the M2 backend on or off.
func newApplianceRigM2(t testing.TB, start time.Time, cacheTTL time.Duration, log *slog.Logger, withM2 bool) *applianceRig {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.Open(ctx, filepath.Join(dir, "malleable.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := &clock{now: start}
	bmc := &recordingBMC{on: map[string]bool{}}
	alloc := &embedded.Allocator{Members: st, BMC: bmc,
		IsOwned:    func(err error) bool { return errors.Is(err, store.ErrAllocated) },
		IsNotFound: func(err error) bool { return errors.Is(err, store.ErrNotFound) }}
	vols, err := storage.NewFile(filepath.Join(dir, "volumes"), storage.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vols.Close() })
	m2b, err := server.Open(ctx, server.Config{DB: filepath.Join(dir, "m2.db"), IQNPrefix: "iqn.2026-11.org.example",
		Portal: "192.0.2.10:3260", Storage: vols, Targets: noTargets{}, Secrets: secrets.NewMemory(), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m2b.Close() })
	img := make([]byte, 1<<20)
	copy(img[510:], []byte{0x55, 0xaa})
	if _, err := m2b.ImportImage(ctx, "debian-12", bytes.NewReader(img), int64(len(img)), ""); err != nil {
		t.Fatal(err)
	}
	rec := &reconcile.Reconciler{Store: st, Allocator: alloc, Log: log, Now: clk.Now, Concurrency: 2,
		Machine: &lease.Machine{Hardware: hardware{alloc}, Disks: unbind{m2b}, Journal: store.Journal{Store: st, Now: clk.Now},
			Project:     func(t string) string { return "malleable-" + t },
			MaxAttempts: 2, PowerOffTimeout: 5 * time.Second, PollInterval: 10 * time.Millisecond}}
	parts := appliance.Parts{Store: st, Limits: lease.DefaultLimits(), Token: adminToken, Logger: log,
		Now: clk.Now, Allocator: alloc, Reconciler: rec, M2: m2b, Power: power.New(alloc, cacheTTL, clk.Now),
		Project: rec.Machine.Project}
	if !withM2 {
		parts.M2 = nil
	}
	srv := httptest.NewServer(parts.Handler())
	t.Cleanup(srv.Close)
	return &applianceRig{t: t, clock: clk, bmc: bmc, rec: rec, url: srv.URL, admin: client.New(srv.URL, adminToken)}
}

// reconcile runs one reconcile pass; an error fails the test.
func (a *applianceRig) reconcile() pass.Result {
	a.t.Helper()
	res, err := a.rec.Pass(context.Background())
	if err != nil {
		a.t.Fatal(err)
	}
	return res
}
