package appliance

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestDriftOfAFreeNodeIsReportedOnce: a free node someone put in a project
// by hand has nothing to fence; it counts as drift every pass but is
// audited once, not every 15 s, until its drift changes.
func TestDriftOfAFreeNodeIsReportedOnce(t *testing.T) {
	r := newRig(t, time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC))
	ctx := context.Background()
	r.admin("POST", "/api/v1/nodes", map[string]any{"name": "node-1", "macs": []string{"52:54:00:00:00:01"}}, 201)
	if err := r.store.AllocateNode(ctx, "node-1", "someone-else"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if res := r.reconcile(); res.Drift != 1 {
			t.Fatalf("pass %d: %+v, want drift 1", i, res)
		}
	}
	if n := r.countAudit("node.drift"); n != 1 {
		t.Errorf("%d node.drift audit entries after 3 passes, want 1", n)
	}
	// Its drift changes: reported again.
	if err := r.store.ReleaseNode(ctx, "node-1", "someone-else"); err != nil {
		t.Fatal(err)
	}
	if err := r.store.AllocateNode(ctx, "node-1", "another"); err != nil {
		t.Fatal(err)
	}
	r.reconcile()
	if n := r.countAudit("node.drift"); n != 2 {
		t.Errorf("%d node.drift audit entries after the drift changed, want 2", n)
	}
}

// TestAdminPowerWaitsForTheHandover: between fence and activate nobody
// holds a node, but its power belongs to the handover: an admin's power-on
// there would hand the next tenant a running node (or boot the old
// tenant's disk), so it is refused while a handover is open.
func TestAdminPowerWaitsForTheHandover(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	r := newRig(t, t0)
	ctx := context.Background()
	r.admin("POST", "/api/v1/nodes", map[string]any{"name": "node-1", "macs": []string{"52:54:00:00:00:01"}}, 201)
	if _, err := r.store.CreateHandover(ctx, "node-1", "", "acme", t0); err != nil {
		t.Fatal(err)
	}
	code, body := r.call(r.token, "PUT", "/api/v1/nodes/node-1/power", map[string]string{"action": "on"})
	if msg, _ := body["error"].(string); code != 409 || !strings.Contains(msg, "being handed over") {
		t.Fatalf("admin power-on during a handover: %d %v, want 409 being handed over", code, body)
	}
	if r.countAudit("power.on") != 1 {
		t.Error("the refused power-on is not in the audit log")
	}
}

// countAudit counts the audit entries with action.
func (r *rig) countAudit(action string) int {
	r.t.Helper()
	entries, err := r.store.ListAudit(context.Background(), 0, 1000)
	if err != nil {
		r.t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if e.Action == action {
			n++
		}
	}
	return n
}
