package appliance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/allocator"
	"github.com/malleable-cloud/malleable/appliance/allocator/embedded"
	"github.com/malleable-cloud/malleable/appliance/api"
	"github.com/malleable-cloud/malleable/appliance/bmc"
	"github.com/malleable-cloud/malleable/appliance/bmc/bmctest"
	"github.com/malleable-cloud/malleable/appliance/lease"
	"github.com/malleable-cloud/malleable/appliance/power"
	"github.com/malleable-cloud/malleable/appliance/reconcile"
	"github.com/malleable-cloud/malleable/appliance/reconcile/pass"
	"github.com/malleable-cloud/malleable/appliance/secrets"
	"github.com/malleable-cloud/malleable/appliance/store"
)

// clock is an injectable, settable time source. A ticking clock runs
// on from the time last set, at the wall clock's pace.
type clock struct {
	mu      sync.Mutex
	now     time.Time
	ticking bool
	setAt   time.Time // wall time of the last Set, for a ticking clock
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ticking {
		return c.now.Add(time.Since(c.setAt))
	}
	return c.now
}

func (c *clock) Set(t time.Time) { c.mu.Lock(); c.now, c.setAt = t, time.Now(); c.mu.Unlock() }

// Tick makes the clock run on from now at the wall clock's pace.
func (c *clock) Tick() { c.mu.Lock(); c.ticking, c.setAt = true, time.Now(); c.mu.Unlock() }

// Wall maps a time of the clock back to the wall clock.
func (c *clock) Wall(t time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return t.Add(c.setAt.Sub(c.now))
}

// rig is an appliance wired in-process over real parts: SQLite, the
// embedded allocator, IPMI to ipmi_sim BMCs, the admin API and the broker.
type rig struct {
	t     *testing.T
	clock *clock
	store *store.Store
	rec   *reconcile.Reconciler
	srv   *httptest.Server
	token string
	power *power.Plane
	// parts and handler are what the rig's server serves; setPlane
	// rebuilds them.
	parts   Parts
	handler atomic.Pointer[http.Handler]

	nodeCount int // nodes leaseNow registered, for unique MACs
}

func newRig(t *testing.T, start time.Time) *rig {
	t.Helper()
	return newRigWith(t, start, nil)
}

// newRigWith is newRig whose allocator is wrap(the embedded one), when
// wrap is set.
func newRigWith(t *testing.T, start time.Time, wrap func(*embedded.Allocator) Allocator) *rig {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := &clock{now: start}
	ipmi := bmc.New(bmc.Options{Timeout: 2 * time.Second, Retries: 2})
	sec := secrets.NewMemory()
	emb := embedded.New(st, sec, ipmi)
	var alloc Allocator = emb
	if wrap != nil {
		alloc = wrap(emb)
	}
	return wireRig(t, st, clk, alloc, sec)
}

// Allocator is what a rig drives: the embedded allocator or a real HIL.
type Allocator = allocator.Allocator

// wireRig wires a reconciler, the API and its passes over st and alloc as
// Run does: one power plane for the broker, the admin API and the
// handovers, the fence and activate steps behind its gate.
func wireRig(t *testing.T, st *store.Store, clk *clock, alloc Allocator, sec api.SecretStore) *rig {
	t.Helper()
	rec := &reconcile.Reconciler{
		Store: st, Allocator: alloc, Log: testLogger(t), Now: clk.Now, Concurrency: 4,
		Machine: &lease.Machine{
			Project:     func(t string) string { return "malleable-" + t },
			MaxAttempts: 2, PowerOffTimeout: 15 * time.Second, PollInterval: 50 * time.Millisecond,
		},
	}
	const token = "admin-token-0123456789abcdef"
	r := &rig{t: t, clock: clk, store: st, rec: rec, token: token,
		parts: Parts{Store: st, Token: token, Limits: lease.DefaultLimits(), Logger: testLogger(t), Now: clk.Now,
			Secrets: sec, Allocator: alloc, Reconciler: rec, Project: rec.Machine.Project}}
	r.setPlane(0)
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		(*r.handler.Load()).ServeHTTP(w, req)
	}))
	t.Cleanup(r.srv.Close)
	// Passes asked for over the API run here, as in Run.
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- rec.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-served })
	return r
}

// setPlane gives the rig a fresh power plane whose status cache keeps
// answers for ttl (nothing known yet), as Run wires one: the broker, the
// admin API and the handovers share it. Call it between requests.
func (r *rig) setPlane(ttl time.Duration) {
	r.power = power.New(r.parts.Allocator.(power.Allocator), ttl, r.clock.Now)
	r.rec.Power = r.power
	r.rec.Machine.Hardware = r.power.Hardware()
	r.rec.Machine.Journal = r.power.Journal(store.Journal{Store: r.store, Now: r.clock.Now})
	r.parts.Power = r.power
	h := r.parts.Handler()
	r.handler.Store(&h)
}

// call sends a JSON request with a bearer token and decodes the answer.
func (r *rig) call(token, method, path string, body any) (int, map[string]any) {
	r.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, r.srv.URL+path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]any{}
	raw, _ := io.ReadAll(resp.Body)
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &out); err != nil {
			r.t.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
	}
	return resp.StatusCode, out
}

func (r *rig) admin(method, path string, body any, want int) map[string]any {
	r.t.Helper()
	code, out := r.call(r.token, method, path, body)
	if code != want {
		r.t.Fatalf("%s %s: %d %v, want %d", method, path, code, out, want)
	}
	return out
}

func (r *rig) reconcile() pass.Result {
	r.t.Helper()
	res, err := r.rec.Pass(context.Background())
	if err != nil {
		r.t.Fatalf("reconcile: %v", err)
	}
	return res
}

func testLogger(t *testing.T) *slogLogger { return newTestLogger(t) }

// setCommands returns the chassis commands the BMC received, with an
// IPMI retransmission (the same command again because a reply was late,
// which go-ipmi does on a loaded machine) counted once.
func setCommands(s *bmctest.Sim) []string {
	var out []string
	for _, c := range s.Commands() {
		if c.Op != "set" {
			continue
		}
		cmd := c.Param + "=" + c.Value
		if len(out) > 0 && out[len(out)-1] == cmd {
			continue
		}
		out = append(out, cmd)
	}
	return out
}

// TestHandoverEndToEnd hands a real (simulated) server from tenant A to
// tenant B at a lease boundary: A reads "off" and is refused, B reads the
// real state and drives it, and the BMC receives only the handover's and
// B's commands.
func TestHandoverEndToEnd(t *testing.T) {
	sim1 := bmctest.Start(t, bmctest.Options{})
	sim2 := bmctest.Start(t, bmctest.Options{})
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	r := newRig(t, t0.Add(-time.Minute))

	for i, s := range []*bmctest.Sim{sim1, sim2} {
		r.admin("POST", "/api/v1/nodes", map[string]any{"name": fmt.Sprintf("node-%d", i+1),
			"macs": []string{fmt.Sprintf("52:54:00:00:00:0%d", i+1)},
			"bmc":  map[string]any{"host": s.Host, "port": s.Port, "user": s.User, "password": s.Password}}, 201)
	}
	for _, ten := range []string{"acme", "globex"} {
		r.admin("POST", "/api/v1/tenants", map[string]any{"name": ten}, 201)
	}
	acme := r.admin("POST", "/api/v1/tenants/acme/token", nil, 201)["token"].(string)
	globex := r.admin("POST", "/api/v1/tenants/globex/token", nil, 201)["token"].(string)
	r.admin("POST", "/api/v1/leases", map[string]any{"node": "node-1", "tenant": "acme",
		"start": t0.Format(time.RFC3339), "end": t0.Add(time.Hour).Format(time.RFC3339)}, 201)
	r.admin("POST", "/api/v1/leases", map[string]any{"node": "node-1", "tenant": "globex",
		"start": t0.Add(time.Hour).Format(time.RFC3339), "end": t0.Add(2 * time.Hour).Format(time.RFC3339)}, 201)

	// Before any lease: nobody holds node-1, acme's power-on is refused.
	if res := r.reconcile(); res.Started != 0 {
		t.Fatalf("before the lease: %+v", res)
	}
	code, body := r.call(acme, "PUT", "/broker/v1/nodes/node-1/power", map[string]string{"action": "on"})
	if code != 403 || !strings.Contains(body["error"].(string), "next lease to acme starts 2026-12-01T09:00:00Z") {
		t.Fatalf("acme before its lease: %d %v", code, body)
	}

	// Lease boundary: acme's lease starts. Until the handover has run,
	// acme does not hold the node yet and is still refused.
	r.clock.Set(t0)
	code, body = r.call(acme, "PUT", "/broker/v1/nodes/node-1/power", map[string]string{"action": "on"})
	if code != 403 {
		t.Fatalf("acme before the handover activated it: %d %v", code, body)
	}
	if res := r.reconcile(); res.Started != 1 || res.Completed != 1 {
		t.Fatalf("at acme's start: %+v", res)
	}
	code, body = r.call(acme, "GET", "/broker/v1/nodes/node-1/power", nil)
	if code != 200 || body["power"] != "off" || body["held"] != true {
		t.Fatalf("acme status: %d %v", code, body)
	}
	if code, body = r.call(acme, "PUT", "/broker/v1/nodes/node-1/power", map[string]string{"action": "on"}); code != 200 {
		t.Fatalf("acme power on: %d %v", code, body)
	}
	waitPower(t, sim1, true)
	// Foreman addresses nodes by their tenant-facing BMC address, which
	// resolves exactly; the real BMC address (both simulated BMCs share
	// 127.0.0.1, on two ports) resolves to nothing and names no node.
	addr := r.admin("GET", "/api/v1/nodes/node-1", nil, 200)["tenant_bmc_address"].(string)
	code, body = r.call(acme, "GET", "/broker/v1/nodes/"+addr+"/power", nil)
	if code != 200 || body["node"] != "node-1" || body["power"] != "on" {
		t.Fatalf("acme status by its tenant-facing BMC address %s: %d %v", addr, code, body)
	}
	code, body = r.call(acme, "GET", "/broker/v1/nodes/"+sim1.Host+"/power", nil)
	if code != 404 || strings.Contains(fmt.Sprint(body), "node-2") {
		t.Fatalf("acme status by the real BMC address: %d %v", code, body)
	}
	// A tenant that never leased a node cannot tell it from a missing one.
	r.admin("POST", "/api/v1/tenants", map[string]any{"name": "initech"}, 201)
	initech := r.admin("POST", "/api/v1/tenants/initech/token", nil, 201)["token"].(string)
	if code, _ = r.call(initech, "GET", "/broker/v1/nodes/node-1/power", nil); code != 404 {
		t.Fatalf("a stranger's status of node-1: %d, want 404", code)
	}
	// globex sees off although the node is on, and cannot touch it.
	code, body = r.call(globex, "GET", "/broker/v1/nodes/node-1/power", nil)
	if code != 200 || body["power"] != "off" || body["held"] != false || body["next_lease_start"] != "2026-12-01T10:00:00Z" {
		t.Fatalf("globex status during acme's lease: %d %v", code, body)
	}
	for _, action := range []string{"off", "cycle", "reset", "on"} {
		code, body = r.call(globex, "PUT", "/broker/v1/nodes/node-1/power", map[string]string{"action": action})
		if code != 403 || !strings.Contains(body["error"].(string), "not leased to globex") {
			t.Fatalf("globex %s during acme's lease: %d %v", action, code, body)
		}
	}
	if code, _ = r.call(globex, "PUT", "/broker/v1/nodes/node-1/boot-device", map[string]any{"device": "pxe"}); code != 403 {
		t.Fatalf("globex boot device: %d", code)
	}
	if !sim1.PoweredOn() {
		t.Fatal("a refused command changed the node's power")
	}
	before := len(setCommands(sim1))

	// Lease boundary: acme's ends, globex's starts. Before the handover
	// runs, neither may act: acme's lease is over, globex is not the holder.
	r.clock.Set(t0.Add(time.Hour))
	for _, tok := range []string{acme, globex} {
		code, body = r.call(tok, "PUT", "/broker/v1/nodes/node-1/power", map[string]string{"action": "off"})
		if code != 403 {
			t.Fatalf("power off between lease end and handover: %d %v", code, body)
		}
	}
	if res := r.reconcile(); res.Started != 1 || res.Completed != 1 {
		t.Fatalf("at the handover: %+v", res)
	}
	if sim1.PoweredOn() {
		t.Fatal("the handover left node-1 on")
	}
	if got := setCommands(sim1)[before:]; len(got) != 1 || got[0] != "power=0" {
		t.Fatalf("BMC commands during the handover = %v, want [power=0]", got)
	}
	code, body = r.call(acme, "GET", "/broker/v1/nodes/node-1/power", nil)
	if code != 200 || body["power"] != "off" || body["held"] != false {
		t.Fatalf("acme after its lease: %d %v", code, body)
	}
	code, body = r.call(acme, "PUT", "/broker/v1/nodes/node-1/power", map[string]string{"action": "on"})
	if code != 403 || !strings.Contains(body["error"].(string), "has no lease of it ahead") {
		t.Fatalf("acme power on after its lease: %d %v", code, body)
	}
	if code, body = r.call(globex, "PUT", "/broker/v1/nodes/node-1/power", map[string]string{"action": "on"}); code != 200 {
		t.Fatalf("globex power on: %d %v", code, body)
	}
	waitPower(t, sim1, true)
	if out := sim1.IPMITool(t, "chassis", "power", "status"); !strings.Contains(out, "Chassis Power is on") {
		t.Fatalf("ipmitool: %s", out)
	}
	code, body = r.call(acme, "GET", "/broker/v1/nodes/node-1/power", nil)
	if code != 200 || body["power"] != "off" {
		t.Fatalf("acme reads %v while globex's node is on", body)
	}
	code, body = r.call(globex, "GET", "/broker/v1/nodes/node-1/power", nil)
	if code != 200 || body["power"] != "on" || body["held"] != true {
		t.Fatalf("globex status: %d %v", code, body)
	}

	// Only the handover's off and each holder's own on reached the BMC.
	if got := setCommands(sim1); strings.Join(got, ",") != "power=1,power=0,power=1" {
		t.Errorf("node-1 BMC saw %v", got)
	}
	if got := setCommands(sim2); len(got) != 0 {
		t.Errorf("node-2 BMC saw %v, want nothing", got)
	}
	// Allocation follows: node-1 is in globex's project only.
	if p, _ := r.store.NodeProject(context.Background(), "node-1"); p != "malleable-globex" {
		t.Errorf("node-1 project = %q", p)
	}
	hs, _ := r.store.ListHandovers(context.Background(), store.HandoverFilter{Node: "node-1"})
	if len(hs) != 2 || hs[0].Status != lease.HandoverDone || hs[0].From != "acme" || hs[0].To != "globex" {
		t.Errorf("handovers = %+v", hs)
	}
	j, _ := r.store.HandoverJournal(context.Background(), hs[0].ID)
	var steps []string
	for _, e := range j {
		if e.Phase == "done" {
			steps = append(steps, string(e.Step))
		}
	}
	if strings.Join(steps, ",") != "fence,power_off,detach,connect,activate" {
		t.Errorf("journal done steps = %v (journal %+v)", steps, j)
	}
	// An unknown node and a bad token.
	if code, _ = r.call(acme, "GET", "/broker/v1/nodes/nope/power", nil); code != 404 {
		t.Errorf("unknown node: %d", code)
	}
	if code, _ = r.call("not-a-real-token-at-all", "GET", "/broker/v1/whoami", nil); code != 401 {
		t.Errorf("bad tenant token: %d", code)
	}
	if code, _ = r.call(r.token, "GET", "/broker/v1/whoami", nil); code != 401 {
		t.Errorf("the admin token must not pass as a tenant's: %d", code)
	}
}

// TestHandoverStuckAndRetry: a BMC that refuses the appliance's password
// makes the power-off step fail; after max_attempts the handover is stuck,
// the previous tenant stays fenced, and a retry after fixing the password
// completes it.
func TestHandoverStuckAndRetry(t *testing.T) {
	sim := bmctest.Start(t, bmctest.Options{})
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	r := newRig(t, t0)
	r.admin("POST", "/api/v1/nodes", map[string]any{"name": "node-1",
		"bmc": map[string]any{"host": sim.Host, "port": sim.Port, "user": sim.User, "password": "wrong-password"}}, 201)
	r.admin("POST", "/api/v1/tenants", map[string]any{"name": "acme"}, 201)
	r.admin("POST", "/api/v1/leases", map[string]any{"node": "node-1", "tenant": "acme", "duration": "1h"}, 201)

	r.reconcile()
	res := r.reconcile()
	if res.Stuck != 1 {
		t.Fatalf("after two failing passes: %+v", res)
	}
	hs := r.admin("GET", "/api/v1/handovers?open=true", nil, 200)
	_ = hs
	list, _ := r.store.ListHandovers(context.Background(), store.HandoverFilter{Open: true})
	if len(list) != 1 || list[0].Status != lease.HandoverStuck || list[0].Step != lease.StepPowerOff ||
		!strings.Contains(list[0].LastError, "read power") {
		t.Fatalf("stuck handover = %+v", list)
	}
	if h, _ := r.store.Holder(context.Background(), "node-1"); h != "" {
		t.Fatalf("holder during a stuck handover = %q", h)
	}
	r.admin("PUT", "/api/v1/nodes/node-1/bmc-password", map[string]string{"password": sim.Password}, 204)
	out := r.admin("POST", fmt.Sprintf("/api/v1/handovers/%d/retry", list[0].ID), nil, 202)
	pass, _ := out["pass"].(map[string]any)
	if out["status"] != "running" || pass == nil || pass["trigger"] != "retry" {
		t.Fatalf("retry answer: %v", out)
	}
	if p := r.waitPass(int64(pass["id"].(float64))); p.State != "done" || len(p.Handovers) != 1 || p.Handovers[0].Status != lease.HandoverDone {
		t.Fatalf("the retry's pass: %+v", p)
	}
	if h, _ := r.store.Holder(context.Background(), "node-1"); h != "acme" {
		t.Fatalf("holder after retry = %q", h)
	}
	audit, _ := r.store.ListAudit(context.Background(), 0, 100)
	var actions []string
	for _, e := range audit {
		actions = append(actions, e.Action)
	}
	if !strings.Contains(strings.Join(actions, ","), "handover.stuck") || !strings.Contains(strings.Join(actions, ","), "handover.retry") {
		t.Errorf("audit lacks the stuck handover or the retry: %v", actions)
	}
	// The retry's audit entry names the pass that resumed the handover.
	for _, e := range audit {
		if e.Action == "handover.retry" && (e.Actor != "admin" || e.Detail != fmt.Sprintf("pass %.0f started", pass["id"])) {
			t.Errorf("retry audit entry = %+v", e)
		}
	}
}

func waitPower(t *testing.T, s *bmctest.Sim, on bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.WaitPower(ctx, on); err != nil {
		t.Fatalf("wait for power %v: %v", on, err)
	}
}

// TestDriftIsFencedAndReported: a node that the allocator has in a project
// other than its holder's (someone changed the allocator behind the
// appliance's back) is fenced — its holder loses power control at once —
// and reported; the handover that follows cannot connect it and gets stuck
// with the reason rather than giving two tenants one node.
func TestDriftIsFencedAndReported(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	r := newRig(t, t0)
	ctx := context.Background()
	r.admin("POST", "/api/v1/nodes", map[string]any{"name": "node-1", "macs": []string{"52:54:00:00:00:01"}}, 201) // no BMC: power steps are skipped
	r.admin("POST", "/api/v1/tenants", map[string]any{"name": "acme"}, 201)
	acme := r.admin("POST", "/api/v1/tenants/acme/token", nil, 201)["token"].(string)
	r.admin("POST", "/api/v1/leases", map[string]any{"node": "node-1", "tenant": "acme", "duration": "2h"}, 201)
	if res := r.reconcile(); res.Completed != 1 || res.Drift != 0 {
		t.Fatalf("first pass: %+v", res)
	}
	if code, body := r.call(acme, "GET", "/broker/v1/nodes/node-1/power", nil); code != 409 || body["held"] != nil {
		// held, but the node has no power control: 409 says so.
		t.Fatalf("acme status of a node without BMC: %d %v", code, body)
	}

	// Behind the appliance's back, the node moves to another project.
	if err := r.store.ReleaseNode(ctx, "node-1", "malleable-acme"); err != nil {
		t.Fatal(err)
	}
	if err := r.store.AllocateNode(ctx, "node-1", "someone-else"); err != nil {
		t.Fatal(err)
	}
	res := r.reconcile()
	if res.Drift != 1 {
		t.Fatalf("drift pass: %+v", res)
	}
	if h, _ := r.store.Holder(ctx, "node-1"); h != "" {
		t.Fatalf("holder after drift = %q, want fenced", h)
	}
	if code, _ := r.call(acme, "PUT", "/broker/v1/nodes/node-1/power", map[string]string{"action": "on"}); code != 403 {
		t.Fatalf("acme may still drive a drifted node: %d", code)
	}
	audit, _ := r.store.ListAudit(ctx, 0, 50)
	found := false
	for _, e := range audit {
		if e.Action == "node.drift" && strings.Contains(e.Detail, `"someone-else"`) && strings.Contains(e.Detail, "fenced from acme") {
			found = true
		}
	}
	if !found {
		t.Errorf("no node.drift audit entry: %+v", audit)
	}
	// The next passes try to give it back to acme, but the allocator
	// refuses to put a node in two projects: the handover gets stuck.
	r.reconcile()
	r.reconcile()
	hs, _ := r.store.ListHandovers(ctx, store.HandoverFilter{Open: true})
	if len(hs) != 1 || hs[0].Status != lease.HandoverStuck || hs[0].Step != lease.StepConnect ||
		!strings.Contains(hs[0].LastError, "another project") {
		t.Fatalf("open handovers = %+v", hs)
	}
	if p, _ := r.store.NodeProject(ctx, "node-1"); p != "someone-else" {
		t.Errorf("project = %q: the appliance must not take the node from another project by itself", p)
	}
}

// A lease cancelled in its first second is recorded as cancelled, yet its
// tenant held the node: it must read "off", not "no such node".
func TestCancelledInFirstSecondStillReadsOff(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	r := newRig(t, t0)
	r.admin("POST", "/api/v1/nodes", map[string]any{"name": "node-1", "macs": []string{"52:54:00:00:00:01"}}, 201)
	r.admin("POST", "/api/v1/tenants", map[string]any{"name": "acme"}, 201)
	acme := r.admin("POST", "/api/v1/tenants/acme/token", nil, 201)["token"].(string)
	l := r.admin("POST", "/api/v1/leases", map[string]any{"node": "node-1", "tenant": "acme", "duration": "1h"}, 201)
	r.reconcile()
	r.clock.Set(t0.Add(300 * time.Millisecond))
	if out := r.admin("POST", fmt.Sprintf("/api/v1/leases/%v/cancel", l["id"]), nil, 200); out["state"] != "cancelled" {
		t.Fatalf("cancel in the first second: %v", out)
	}
	r.reconcile()
	code, body := r.call(acme, "GET", "/broker/v1/nodes/node-1/power", nil)
	if code != 200 || body["power"] != "off" || body["held"] != false {
		t.Fatalf("previous holder reads %d %v, want off", code, body)
	}
}
