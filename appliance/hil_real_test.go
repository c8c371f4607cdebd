package appliance

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/allocator"
	"github.com/malleable-cloud/malleable/appliance/allocator/embedded"
	"github.com/malleable-cloud/malleable/appliance/allocator/hil"
	"github.com/malleable-cloud/malleable/appliance/allocator/hil/hiltest"
	"github.com/malleable-cloud/malleable/appliance/allocator/node"
	"github.com/malleable-cloud/malleable/appliance/bmc/bmctest"
	"github.com/malleable-cloud/malleable/appliance/lease"
	"github.com/malleable-cloud/malleable/appliance/secrets"
	"github.com/malleable-cloud/malleable/appliance/store"
)

// newHILRig is newRig with the hil allocator against a real HIL kit.
func newHILRig(t *testing.T, start time.Time, k *hiltest.Kit) (*rig, *hil.Client) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := &clock{now: start}
	a, err := allocator.Open(ctx, allocator.Config{Type: "hil", HIL: hil.ClientConfig{Endpoint: k.URL,
		Username: k.AdminUser, Password: k.AdminPass, ActionWait: 5 * time.Second}}, st, nil, testLogger(t))
	if err != nil {
		t.Fatalf("start-up check with HIL's admin: %v", err)
	}
	c := a.(*hil.Client)
	return wireRig(t, st, clk, c, secrets.NewMemory()), c
}

func (r *rig) lease(node, tenant string, start time.Time, d time.Duration) {
	r.t.Helper()
	r.admin("POST", "/api/v1/leases", map[string]any{"node": node, "tenant": tenant,
		"start": start.Format(time.RFC3339), "end": start.Add(d).Format(time.RFC3339)}, 201)
}

func (r *rig) openHandover(node string) lease.Handover {
	r.t.Helper()
	hs, err := r.store.ListHandovers(context.Background(), store.HandoverFilter{Node: node, Open: true})
	if err != nil || len(hs) != 1 {
		r.t.Fatalf("open handovers of %s: %+v, %v", node, hs, err)
	}
	return hs[0]
}

func (r *rig) auditHas(action, substr string) bool {
	r.t.Helper()
	entries, err := r.store.ListAudit(context.Background(), 0, 200)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, e := range entries {
		if e.Action == action && strings.Contains(e.Detail+" "+e.Result, substr) {
			return true
		}
	}
	return false
}

// TestHILAllocator runs the appliance's handovers through a real HIL and
// OBMd: node add checks, free → acme (powered off on arrival) → beta with
// a network to detach, drift fenced, a pending network action that waits
// instead of failing, HIL down during a handover, and HIL back without its
// state.
func TestHILAllocator(t *testing.T) {
	k := hiltest.Start(t)
	ctx := context.Background()
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	r, c := newHILRig(t, t0, k)
	for _, n := range []string{"node-1", "node-2", "node-3"} {
		k.AddNode(n)
	}
	k.SetPower("node-1", true) // a free node left on

	// serve's start-up check refuses a HIL account that is not an admin.
	k.AddProject("members")
	k.AddUser("alice", "alice-secret", false, "members")
	member := allocator.Config{Type: "hil", HIL: hil.ClientConfig{Endpoint: k.URL, Username: "alice", Password: "alice-secret"}}
	if _, err := allocator.Open(ctx, member, nil, nil, testLogger(t)); err == nil || !strings.Contains(err.Error(), "needs a HIL administrator") {
		t.Fatalf("start-up check with a project member's account: %v", err)
	}

	// node add: checked in HIL.
	code, body := r.call(r.token, "POST", "/api/v1/nodes", map[string]any{"name": "ghost", "macs": []string{"52:54:00:00:0f:00"}})
	if code != 422 || !strings.Contains(body["error"].(string), `HIL has no node named "ghost"`) {
		t.Fatalf("node add of a node HIL lacks: %d %v", code, body)
	}
	for i, n := range []string{"node-1", "node-2", "node-3"} {
		r.admin("POST", "/api/v1/nodes", map[string]any{"name": n, "macs": []string{fmt.Sprintf("52:54:00:00:0f:%02x", i+1)}}, 201)
	}
	for _, ten := range []string{"acme", "beta"} {
		r.admin("POST", "/api/v1/tenants", map[string]any{"name": ten}, 201)
	}

	// free → acme: the node reaches acme powered off.
	r.lease("node-1", "acme", t0, time.Hour)
	r.lease("node-1", "beta", t0.Add(time.Hour), time.Hour)
	if res := r.reconcile(); res.Completed != 1 || res.Drift != 0 {
		t.Fatalf("free → acme: %+v", res)
	}
	if p := k.NodeProject("node-1"); p != "malleable-acme" {
		t.Fatalf("node-1 in HIL project %q, want malleable-acme", p)
	}
	if k.PowerIsOn("node-1") {
		t.Fatal("node-1 reached its first tenant powered on")
	}
	// Adding it again is the store's duplicate, not HIL's "in a project".
	r.admin("POST", "/api/v1/nodes", map[string]any{"name": "node-1", "macs": []string{"52:54:00:00:0f:09"}}, 409)

	// acme uses it: power on, a network attached.
	if err := c.Power(ctx, "node-1", node.PowerOn); err != nil {
		t.Fatal(err)
	}
	k.AttachNetwork("node-1", "malleable-acme", "net-acme")

	// acme → beta: powered off, network detached, moved.
	r.clock.Set(t0.Add(time.Hour))
	if res := r.reconcile(); res.Completed != 1 || res.Drift != 0 {
		t.Fatalf("acme → beta: %+v", res)
	}
	if p := k.NodeProject("node-1"); p != "malleable-beta" {
		t.Fatalf("node-1 in HIL project %q, want malleable-beta", p)
	}
	if nets := k.Networks("node-1"); len(nets) != 0 {
		t.Fatalf("acme's network still attached: %v", nets)
	}
	if k.PowerIsOn("node-1") {
		t.Fatal("node-1 reached beta powered on")
	}
	if h, _ := r.store.Holder(ctx, "node-1"); h != "beta" {
		t.Fatalf("holder of node-1 = %q, want beta", h)
	}

	// Drift: an operator moves node-1 by hand in HIL, and the intruder
	// enables its OBM. Before any pass sees it, beta's power-on through the
	// broker is refused: HIL no longer shows node-1 in beta's project, and
	// the command never reaches OBMd (the appliance's admin account could
	// drive it).
	k.MoveNode("node-1", "intruder")
	k.Must(http.MethodPut, "/node/node-1/obm", map[string]bool{"enabled": true})
	beta := r.admin("POST", "/api/v1/tenants/beta/token", nil, 201)["token"].(string)
	if code, body := r.call(beta, "PUT", "/broker/v1/nodes/node-1/power", map[string]string{"action": "on"}); code != 409 {
		t.Fatalf("beta's power-on of a node HIL shows in another project: %d %v, want 409", code, body)
	}
	if k.PowerIsOn("node-1") {
		t.Fatal("beta's power-on reached the node after HIL moved it to another project")
	}
	k.Must(http.MethodPut, "/node/node-1/obm", map[string]bool{"enabled": false})
	if res := r.reconcile(); res.Drift != 1 {
		t.Fatalf("drift pass: %+v", res)
	}
	if h, _ := r.store.Holder(ctx, "node-1"); h != "" {
		t.Fatalf("holder after drift = %q, want fenced", h)
	}
	if !r.auditHas("node.drift", `"intruder"`) {
		t.Error("no node.drift audit entry naming HIL's project")
	}
	if err := c.VerifyProject(ctx, "node-1", "malleable-beta"); err == nil {
		t.Fatal("VerifyProject still shows node-1 in beta's project")
	}

	// A pending network action: HIL's network daemon stops, then acme
	// attaches a network to node-3; its handover to beta waits, never
	// stuck, until the daemon is back.
	r.lease("node-3", "acme", t0.Add(time.Hour), time.Hour)
	r.lease("node-3", "beta", t0.Add(2*time.Hour), time.Hour)
	if res := r.reconcile(); res.Completed != 1 {
		t.Fatalf("node-3 to acme: %+v", res)
	}
	k.StopNetworks()
	k.QueueAttachNetwork("node-3", "malleable-acme", "net-acme-3")
	r.clock.Set(t0.Add(2 * time.Hour))
	for range 3 { // MaxAttempts is 2
		r.reconcile()
	}
	h := r.openHandover("node-3")
	if h.Status != lease.HandoverRunning || h.Step != lease.StepDetach || h.Attempts != 0 ||
		!strings.Contains(h.LastError, "serve-networks") {
		t.Fatalf("handover with a PENDING network action: %+v", h)
	}
	if !r.auditHas("handover.wait", "serve-networks") {
		t.Error("no handover.wait audit entry with the reason")
	}
	k.StartNetworks()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if res := r.reconcile(); res.Completed == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node-3's handover did not complete after the network daemon came back: %+v", r.openHandover("node-3"))
		}
		time.Sleep(500 * time.Millisecond)
	}

	// HIL goes down in the middle of node-2's handover: it waits.
	r.lease("node-2", "acme", t0.Add(2*time.Hour), time.Hour)
	r.rec.Machine.Hook = func(point string) {
		if point == "connect:intent" {
			k.Down()
		}
	}
	r.reconcile()
	r.rec.Machine.Hook = nil
	for range 3 {
		r.reconcile()
	}
	h = r.openHandover("node-2")
	if h.Status != lease.HandoverRunning || h.Step != lease.StepConnect || h.Attempts != 0 ||
		!strings.Contains(h.LastError, "HIL unavailable") {
		t.Fatalf("handover with HIL down: %+v", h)
	}

	// HIL back on an empty database: the drift check says HIL lost its
	// state, names the nodes, and fences nobody.
	k.Up()
	if _, err := r.rec.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if projects, _ := c.NodeProjects(ctx); !r.auditHas("allocator.lost_state", "lost its state") {
		t.Fatalf("no allocator.lost_state audit entry saying HIL lost its state (HIL has %v)", projects)
	}
	if !r.auditHas("allocator.lost_state", "node-1, node-2, node-3") {
		t.Error("the allocator.lost_state audit entry does not name the nodes")
	}
	if hb, _ := r.store.Holder(ctx, "node-3"); hb != "beta" {
		t.Errorf("node-3's holder = %q: a lost HIL state must not fence nodes one by one", hb)
	}
}

// TestFirstLeaseReachesTenantOffEmbedded: the embedded allocator's side of
// "a node reaches a new tenant powered off", with a real simulated BMC.
func TestFirstLeaseReachesTenantOffEmbedded(t *testing.T) {
	sim := bmctest.Start(t, bmctest.Options{})
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	r := newRig(t, t0)
	r.admin("POST", "/api/v1/nodes", map[string]any{"name": "node-1",
		"bmc": map[string]any{"host": sim.Host, "port": sim.Port, "user": sim.User, "password": sim.Password}}, 201)
	r.admin("POST", "/api/v1/tenants", map[string]any{"name": "acme"}, 201)
	sim.IPMITool(t, "chassis", "power", "on")
	waitPower(t, sim, true)
	r.lease("node-1", "acme", t0, time.Hour)
	if res := r.reconcile(); res.Completed != 1 {
		t.Fatalf("free → acme: %+v", res)
	}
	if sim.PoweredOn() {
		t.Fatal("node-1 reached its first tenant powered on")
	}
}

// TestEmbeddedVerifyProject: the embedded allocator answers VerifyProject
// as hil.Client does, from the appliance's own membership table.
func TestEmbeddedVerifyProject(t *testing.T) {
	r := newRig(t, time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC))
	ctx := context.Background()
	r.admin("POST", "/api/v1/nodes", map[string]any{"name": "node-1", "macs": []string{"52:54:00:00:0f:01"}}, 201)
	alloc := r.rec.Allocator.(*embedded.Allocator)
	if err := alloc.VerifyProject(ctx, "node-1", "p-a"); !errors.Is(err, node.ErrOwned) {
		t.Fatalf("free node: %v, want ErrOwned", err)
	}
	if err := alloc.Connect(ctx, "node-1", "p-a"); err != nil {
		t.Fatal(err)
	}
	if err := alloc.VerifyProject(ctx, "node-1", "p-a"); err != nil {
		t.Fatalf("node in p-a: %v", err)
	}
	if err := alloc.VerifyProject(ctx, "node-1", "p-b"); !errors.Is(err, node.ErrOwned) || !strings.Contains(err.Error(), `"p-a"`) {
		t.Fatalf("node in p-a, asked p-b: %v", err)
	}
}
