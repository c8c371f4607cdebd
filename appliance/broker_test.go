package appliance

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/allocator/embedded"
	"github.com/malleable-cloud/malleable/appliance/allocator/node"
	"github.com/malleable-cloud/malleable/appliance/bmc/bmctest"
	"github.com/malleable-cloud/malleable/appliance/reconcile/pass"
	"github.com/malleable-cloud/malleable/appliance/store"
)

// leaseRig is a rig with node-1 on sim, tenants acme (holding node-1 from
// t0 for an hour, handed over) and globex (leasing it the hour after).
func leaseRig(t *testing.T, sim *bmctest.Sim, t0 time.Time) (r *rig, acme, globex string) {
	t.Helper()
	r = newRig(t, t0.Add(-time.Minute))
	bmcSpec := map[string]any{}
	if sim != nil {
		bmcSpec = map[string]any{"host": sim.Host, "port": sim.Port, "user": sim.User, "password": sim.Password}
	}
	node := map[string]any{"name": "node-1", "macs": []string{"52:54:00:00:00:01"}}
	if sim != nil {
		node["bmc"] = bmcSpec
	}
	r.admin("POST", "/api/v1/nodes", node, 201)
	for _, ten := range []string{"acme", "globex"} {
		r.admin("POST", "/api/v1/tenants", map[string]any{"name": ten}, 201)
	}
	acme = r.admin("POST", "/api/v1/tenants/acme/token", nil, 201)["token"].(string)
	globex = r.admin("POST", "/api/v1/tenants/globex/token", nil, 201)["token"].(string)
	for i, ten := range []string{"acme", "globex"} {
		r.admin("POST", "/api/v1/leases", map[string]any{"node": "node-1", "tenant": ten,
			"start": t0.Add(time.Duration(i) * time.Hour).Format(time.RFC3339),
			"end":   t0.Add(time.Duration(i+1) * time.Hour).Format(time.RFC3339)}, 201)
	}
	r.clock.Set(t0)
	if res := r.reconcile(); res.Completed != 1 {
		t.Fatalf("acme's handover: %+v", res)
	}
	return r, acme, globex
}

// TestHandoverDropsCachedPower: with a long status cache, the handover's
// power-off must not leave the old holder's "on" for the new holder.
func TestHandoverDropsCachedPower(t *testing.T) {
	sim := bmctest.Start(t, bmctest.Options{})
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	r, acme, globex := leaseRig(t, sim, t0)
	r.setPlane(24 * time.Hour) // past the lease boundary the clock jumps to
	if code, body := r.call(acme, "PUT", "/broker/v1/nodes/node-1/power", map[string]string{"action": "on"}); code != 200 {
		t.Fatalf("acme power on: %d %v", code, body)
	}
	waitPower(t, sim, true)
	if code, body := r.call(acme, "GET", "/broker/v1/nodes/node-1/power", nil); code != 200 || body["power"] != "on" {
		t.Fatalf("acme status: %d %v", code, body)
	}
	r.clock.Set(t0.Add(time.Hour))
	if res := r.reconcile(); res.Completed != 1 {
		t.Fatalf("handover to globex: %+v", res)
	}
	if sim.PoweredOn() {
		t.Fatal("the handover left the machine on")
	}
	code, body := r.call(globex, "GET", "/broker/v1/nodes/node-1/power", nil)
	if code != 200 || body["held"] != true || body["power"] != "off" {
		t.Fatalf("globex reads %d %v after the handover powered node-1 off, want off", code, body)
	}
}

// TestSlowStatusAnswersLastKnown: a BMC that stops answering (its ipmi_sim
// SIGSTOPped) after one read gets the last known state, marked stale with
// its age, well within Foreman's 3 s; one never read answers 502, also in
// time.
func TestSlowStatusAnswersLastKnown(t *testing.T) {
	sim := bmctest.Start(t, bmctest.Options{})
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	r, acme, _ := leaseRig(t, sim, t0)
	if code, body := r.call(acme, "PUT", "/broker/v1/nodes/node-1/power", map[string]string{"action": "on"}); code != 200 {
		t.Fatalf("acme power on: %d %v", code, body)
	}
	waitPower(t, sim, true)
	if code, body := r.call(acme, "GET", "/broker/v1/nodes/node-1/power", nil); code != 200 || body["power"] != "on" || body["stale"] != nil {
		t.Fatalf("acme status: %d %v", code, body)
	}
	r.clock.Set(t0.Add(42 * time.Second))
	sim.Freeze(t)
	start := time.Now()
	code, body := r.call(acme, "GET", "/broker/v1/nodes/node-1/power", nil)
	took := time.Since(start)
	t.Logf("status of a hung BMC read once before: %d %v in %v", code, body, took.Round(time.Millisecond))
	if code != 200 || body["power"] != "on" || body["stale"] != true || body["age_seconds"] != float64(42) {
		t.Errorf("status of a hung BMC = %d %v, want the last known on, stale, 42 s old", code, body)
	}
	if took > 2500*time.Millisecond {
		t.Errorf("answered in %v: too close to Foreman's 3 s", took)
	}

	// A node whose BMC never answered: nothing to fall back on.
	r.setPlane(0) // nothing known of node-1
	start = time.Now()
	code, body = r.call(acme, "GET", "/broker/v1/nodes/node-1/power", nil)
	took = time.Since(start)
	if code != 502 || body["stale"] != nil || strings.Contains(fmt.Sprint(body), "127.0.0.1") {
		t.Errorf("status of a hung BMC never read = %d %v, want a generic 502", code, body)
	}
	if took > 2500*time.Millisecond {
		t.Errorf("502 after %v: too close to Foreman's 3 s", took)
	}
}

// TestStuckHandoverSaysHandedOver: while a handover is stuck, the tenant
// it is for is told the node is being handed over, not that its lease
// "starts" at a time already past.
func TestStuckHandoverSaysHandedOver(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	r := newRig(t, t0)
	// A BMC nobody answers on: the power-off step fails and gets stuck.
	r.admin("POST", "/api/v1/nodes", map[string]any{"name": "node-1",
		"bmc": map[string]any{"host": "127.0.0.1", "port": 9, "user": "admin", "password": "secret"}}, 201)
	r.admin("POST", "/api/v1/tenants", map[string]any{"name": "acme"}, 201)
	acme := r.admin("POST", "/api/v1/tenants/acme/token", nil, 201)["token"].(string)
	r.admin("POST", "/api/v1/leases", map[string]any{"node": "node-1", "tenant": "acme", "duration": "1h"}, 201)
	r.reconcile()
	r.reconcile()
	if hs, _ := r.store.ListHandovers(context.Background(), store.HandoverFilter{Open: true}); len(hs) != 1 || hs[0].Status != "stuck" {
		t.Fatalf("open handovers: %+v", hs)
	}
	r.clock.Set(t0.Add(10 * time.Minute))
	code, body := r.call(acme, "PUT", "/broker/v1/nodes/node-1/power", map[string]string{"action": "on"})
	if code != 403 || body["error"] != "node node-1 is being handed over" || body["handover"] != true || body["next_lease_start"] != nil {
		t.Errorf("acme's power on during a stuck handover: %d %v", code, body)
	}
	code, body = r.call(acme, "GET", "/broker/v1/nodes/node-1/power", nil)
	if code != 200 || body["power"] != "off" || body["handover"] != true || body["next_lease_start"] != nil {
		t.Errorf("acme's status during a stuck handover: %d %v", code, body)
	}
}

// TestTenantRefusalsLeakNothingAndAreAudited: error bodies name only the
// tenant's own node and a generic reason (never a real BMC address or
// user, never another node); every refused request is audited with the
// details.
func TestTenantRefusalsLeakNothingAndAreAudited(t *testing.T) {
	sim := bmctest.Start(t, bmctest.Options{})
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	r, acme, globex := leaseRig(t, sim, t0)
	ctx := context.Background()
	r.admin("POST", "/api/v1/nodes", map[string]any{"name": "node-2",
		"bmc": map[string]any{"host": sim.Host, "port": sim.Port + 1, "user": "root", "password": "x"}}, 201)
	addr2 := r.admin("GET", "/api/v1/nodes/node-2", nil, 200)["tenant_bmc_address"].(string)

	// The tenant's node list carries the tenant-facing address only.
	ls := r.get(acme, "/broker/v1/nodes")
	addr1 := r.admin("GET", "/api/v1/nodes/node-1", nil, 200)["tenant_bmc_address"].(string)
	if !strings.Contains(ls, `"bmc_address": "`+addr1+`"`) || strings.Contains(ls, sim.Host) ||
		strings.Contains(ls, fmt.Sprint(sim.Port)) || strings.Contains(ls, "bmc_host") || strings.Contains(ls, sim.User) {
		t.Errorf("acme's nodes: %s", ls)
	}

	// The BMC now refuses the appliance's password: a boot-device change fails.
	r.admin("PUT", "/api/v1/nodes/node-1/bmc-password", map[string]string{"password": "wrong-password"}, 204)
	code, body := r.call(acme, "PUT", "/broker/v1/nodes/node-1/boot-device", map[string]any{"device": "pxe"})
	if code != 502 || body["error"] != "node node-1: power control failed" {
		t.Errorf("boot device at a BMC refusing the password: %d %v", code, body)
	}
	cases := []struct {
		token, method, path string
		body                any
		status              int
	}{
		{globex, "PUT", "/broker/v1/nodes/node-1/power", map[string]string{"action": "on"}, 403},
		{globex, "PUT", "/broker/v1/nodes/node-1/boot-device", map[string]any{"device": "disk"}, 403},
		{acme, "GET", "/broker/v1/nodes/" + addr2 + "/power", nil, 404},
		{acme, "PUT", "/broker/v1/nodes/" + addr2 + "/power", map[string]string{"action": "off"}, 404},
		{acme, "GET", "/broker/v1/nodes/" + sim.Host + "/power", nil, 404},
		{acme, "PUT", "/broker/v1/nodes/node-1/power", map[string]string{"action": "explode"}, 400},
	}
	for _, c := range cases {
		code, body := r.call(c.token, c.method, c.path, c.body)
		if code != c.status {
			t.Errorf("%s %s: %d %v, want %d", c.method, c.path, code, body, c.status)
		}
		for _, leak := range []string{"node-2", sim.Host, "root", "admin@"} {
			if strings.Contains(fmt.Sprint(body), leak) && !strings.Contains(c.path, leak) { // its own ref may come back
				t.Errorf("%s %s: the answer %v leaks %q", c.method, c.path, body, leak)
			}
		}
	}
	audit, err := r.store.ListAudit(ctx, 0, 200)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range audit {
		if strings.HasPrefix(e.Actor, "tenant:") && e.Result != "ok" {
			got = append(got, fmt.Sprintf("%s %s %s %s", e.Actor, e.Action, e.Target, e.Result))
		}
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{
		"tenant:acme bootdevice.pxe node/node-1 failed: node node-1: power control failed: ", // with the cause
		"tenant:globex power.on node/node-1 refused (403)",
		"tenant:globex bootdevice.disk node/node-1 refused (403)",
		"tenant:acme power.status node/" + addr2 + " refused (404)",
		"tenant:acme power.off node/" + addr2 + " refused (404)",
		"tenant:acme power.status node/" + sim.Host + " refused (404)",
		"tenant:acme power node/node-1 refused (400)",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("audit lacks %q; tenants' refusals:\n%s", want, all)
		}
	}
	if !strings.Contains(all, sim.Host) || !strings.Contains(all, "bmc rejected the credentials") {
		t.Errorf("the audit entry of the failed boot-device change lacks its cause:\n%s", all)
	}
}

// verifyingAlloc is the embedded allocator plus the project check a HIL
// client does: the one error path of VerifyProject the embedded allocator
// cannot produce.
type verifyingAlloc struct {
	*embedded.Allocator
	mu    sync.Mutex
	err   error
	calls []string
}

func (v *verifyingAlloc) VerifyProject(_ context.Context, node, project string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.calls = append(v.calls, node+" "+project)
	return v.err
}

// TestBrokerVerifiesProjectBeforeCommands: an allocator that can check
// node ownership is asked, inside the gate, before every command, with
// the holder's project; a node outside it is refused with a generic 409
// and the command never reaches the BMC.
func TestBrokerVerifiesProjectBeforeCommands(t *testing.T) {
	sim := bmctest.Start(t, bmctest.Options{})
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	var va *verifyingAlloc
	r := newRigWith(t, t0, func(e *embedded.Allocator) Allocator { va = &verifyingAlloc{Allocator: e}; return va })
	r.admin("POST", "/api/v1/nodes", map[string]any{"name": "node-1",
		"bmc": map[string]any{"host": sim.Host, "port": sim.Port, "user": sim.User, "password": sim.Password}}, 201)
	r.admin("POST", "/api/v1/tenants", map[string]any{"name": "acme"}, 201)
	acme := r.admin("POST", "/api/v1/tenants/acme/token", nil, 201)["token"].(string)
	r.admin("POST", "/api/v1/leases", map[string]any{"node": "node-1", "tenant": "acme", "duration": "1h"}, 201)
	r.reconcile()

	va.err = fmt.Errorf("HIL has node-1 in project other-lab: %w", node.ErrOwned)
	code, body := r.call(acme, "PUT", "/broker/v1/nodes/node-1/power", map[string]string{"action": "on"})
	if code != 409 || strings.Contains(fmt.Sprint(body), "other-lab") || !strings.Contains(fmt.Sprint(body), "node node-1") {
		t.Errorf("power on outside the project: %d %v", code, body)
	}
	if got := setCommands(sim); len(got) != 0 {
		t.Errorf("a refused command reached the BMC: %v", got)
	}
	audit, _ := r.store.ListAudit(context.Background(), 0, 50)
	found := false
	for _, e := range audit {
		found = found || (e.Action == "power.on" && strings.Contains(e.Result, "other-lab"))
	}
	if !found {
		t.Errorf("the audit lacks the refusal's cause: %+v", audit)
	}

	va.err = nil
	if code, body := r.call(acme, "PUT", "/broker/v1/nodes/node-1/power", map[string]string{"action": "on"}); code != 200 {
		t.Fatalf("power on inside the project: %d %v", code, body)
	}
	waitPower(t, sim, true)
	va.mu.Lock()
	defer va.mu.Unlock()
	if strings.Join(va.calls, ",") != "node-1 malleable-acme,node-1 malleable-acme" {
		t.Errorf("VerifyProject calls = %v", va.calls)
	}
}

// get returns the raw body of a GET with token.
func (r *rig) get(token, path string) string {
	r.t.Helper()
	req, _ := http.NewRequest("GET", r.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestDriftFenceWaitsForTheGate: the drift fence takes the node's gate
// exclusively, so it waits for a command that holds it (checked, not yet
// landed), and the holder is cleared only after.
func TestDriftFenceWaitsForTheGate(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	r, _, _ := leaseRig(t, nil, t0)
	ctx := context.Background()
	if err := r.store.ReleaseNode(ctx, "node-1", "malleable-acme"); err != nil {
		t.Fatal(err)
	}
	if err := r.store.AllocateNode(ctx, "node-1", "someone-else"); err != nil {
		t.Fatal(err)
	}
	release := r.power.Shared("node-1") // a command in flight
	done := make(chan pass.Result)
	go func() { res, _ := r.rec.Pass(ctx); done <- res }()
	time.Sleep(300 * time.Millisecond)
	if h, _ := r.store.Holder(ctx, "node-1"); h != "acme" {
		t.Errorf("the drift fence cleared the holder (%q) while a command held the gate", h)
	}
	release()
	select {
	case res := <-done:
		if res.Drift != 1 {
			t.Errorf("pass: %+v", res)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the drift fence did not finish after the gate was released")
	}
	if h, _ := r.store.Holder(ctx, "node-1"); h != "" {
		t.Errorf("holder after the drift fence = %q", h)
	}
}
