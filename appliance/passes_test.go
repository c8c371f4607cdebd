package appliance

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/bmc/bmctest"
	"github.com/malleable-cloud/malleable/appliance/lease"
	"github.com/malleable-cloud/malleable/appliance/reconcile/pass"
	"github.com/malleable-cloud/malleable/appliance/store"
)

// holdAt makes the rig's handovers block at hook point until the returned
// release is called; entered is closed when the first one gets there.
func holdAt(r *rig, point string) (entered <-chan struct{}, release func()) {
	in := make(chan struct{})
	out := make(chan struct{})
	var once, rel sync.Once
	r.rec.Machine.Hook = func(p string) {
		if p == point {
			once.Do(func() { close(in) })
			<-out
		}
	}
	return in, func() { rel.Do(func() { close(out) }) }
}

// leaseNow registers node (a MAC, no BMC: its power step is skipped) and
// tenant and leases the node to it from the rig's now.
func (r *rig) leaseNow(node, tenant string) {
	r.t.Helper()
	r.nodeCount++
	mac := fmt.Sprintf("52:54:00:00:10:%02x", r.nodeCount)
	r.admin("POST", "/api/v1/nodes", map[string]any{"name": node, "macs": []string{mac}}, 201)
	r.admin("POST", "/api/v1/tenants", map[string]any{"name": tenant}, 201)
	r.admin("POST", "/api/v1/leases", map[string]any{"node": node, "tenant": tenant, "duration": "1h"}, 201)
}

// waitHandover polls the store until node's newest handover has status
// want, for at most 20 s.
func (r *rig) waitHandover(node string, want lease.HandoverStatus) lease.Handover {
	r.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		hs, err := r.store.ListHandovers(context.Background(), store.HandoverFilter{Node: node, Limit: 1})
		if err == nil && len(hs) == 1 && hs[0].Status == want {
			return hs[0]
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("handover of %s is not %s after 20s: %+v, %v", node, want, hs, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitClosed(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestReconcilePassSurvivesClientGone: an admin asks for a pass, and its
// HTTP client goes away while a handover is at its power-off step (held
// there until then). The pass belongs to the daemon, not to the request:
// the real BMC (ipmi_sim) still powers the node off and the handover
// completes.
func TestReconcilePassSurvivesClientGone(t *testing.T) {
	sim := bmctest.Start(t, bmctest.Options{})
	r := newRig(t, time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC))
	r.admin("POST", "/api/v1/nodes", map[string]any{"name": "node-1",
		"bmc": map[string]any{"host": sim.Host, "port": sim.Port, "user": sim.User, "password": sim.Password}}, 201)
	r.admin("PUT", "/api/v1/nodes/node-1/power", map[string]string{"action": "on"}, 200)
	waitPower(t, sim, true)
	r.admin("POST", "/api/v1/tenants", map[string]any{"name": "acme"}, 201)
	r.admin("POST", "/api/v1/leases", map[string]any{"node": "node-1", "tenant": "acme", "duration": "1h"}, 201)
	entered, release := holdAt(r, "power_off:intent")
	defer release()

	ctx, cancel := context.WithCancel(context.Background())
	client := &http.Client{Transport: &http.Transport{}}
	answered := make(chan int, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "POST", r.srv.URL+"/api/v1/reconcile", nil)
		req.Header.Set("Authorization", "Bearer "+r.token)
		resp, err := client.Do(req)
		if err != nil {
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	waitClosed(t, entered, "the handover to reach power_off")
	cancel() // the admin's CLI gives up
	client.CloseIdleConnections()
	time.Sleep(100 * time.Millisecond) // let the server see the connection go
	release()

	h := r.waitHandover("node-1", lease.HandoverDone)
	if h.To != "acme" {
		t.Errorf("handover = %+v", h)
	}
	if sim.PoweredOn() {
		t.Error("the node is still on after its handover")
	}
	if code := <-answered; code != 0 && code != http.StatusAccepted {
		t.Errorf("POST /api/v1/reconcile answered %d, want 202", code)
	}
}

// passView is a pass as the API reports it.
type passView struct {
	ID        int64       `json:"id"`
	Trigger   string      `json:"trigger"`
	By        string      `json:"requested_by"`
	State     string      `json:"state"`
	StartedAt time.Time   `json:"started_at"`
	EndedAt   time.Time   `json:"ended_at"`
	Result    pass.Result `json:"result"`
	Handovers []struct {
		lease.Handover
		Steps []struct {
			Step    string `json:"step"`
			Outcome string `json:"outcome"`
		} `json:"steps"`
	} `json:"handovers"`
}

func (r *rig) post(path string) (int, http.Header, []byte) {
	r.t.Helper()
	req, _ := http.NewRequest("POST", r.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+r.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Error(err)
		return 0, nil, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// waitPass polls GET /api/v1/reconcile/passes/{id} until the pass ends.
func (r *rig) waitPass(id int64) passView {
	r.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var p passView
		b, _ := json.Marshal(r.admin("GET", fmt.Sprintf("/api/v1/reconcile/passes/%d", id), nil, 200))
		json.Unmarshal(b, &p)
		if p.State != "running" && p.State != "queued" {
			return p
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("pass %d still %s after 20s", id, p.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReconcileConcurrentRequestsShareOnePass: five admins ask for a pass
// at once; one pass starts (202), the others are told about it (200), and
// its record shows the handover's live step while it runs.
func TestReconcileConcurrentRequestsShareOnePass(t *testing.T) {
	r := newRig(t, time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC))
	r.leaseNow("node-1", "acme")
	entered, release := holdAt(r, "power_off:intent")
	defer release()

	const n = 5
	type answer struct {
		code int
		loc  string
		p    passView
	}
	answers := make(chan answer, n)
	start := make(chan struct{})
	for range n {
		go func() {
			<-start
			code, hdr, body := r.post("/api/v1/reconcile")
			var a answer
			a.code = code
			if hdr != nil {
				a.loc = hdr.Get("Location")
			}
			json.Unmarshal(body, &a.p)
			answers <- a
		}()
	}
	close(start)
	waitClosed(t, entered, "the handover to reach power_off")
	var got []answer
	timeout := time.After(5 * time.Second)
	for len(got) < n {
		select {
		case a := <-answers:
			got = append(got, a)
		case <-timeout:
			release()
			t.Fatalf("only %d of %d requests answered while the pass runs", len(got), n)
		}
	}
	accepted := 0
	for _, a := range got {
		if a.p.ID == 0 || a.p.ID != got[0].p.ID {
			t.Errorf("answers name different passes: %+v", got)
		}
		if a.loc != fmt.Sprintf("/api/v1/reconcile/passes/%d", a.p.ID) {
			t.Errorf("Location %q for pass %d", a.loc, a.p.ID)
		}
		switch a.code {
		case http.StatusAccepted:
			accepted++
		case http.StatusOK:
		default:
			t.Errorf("POST /api/v1/reconcile = %d", a.code)
		}
	}
	if accepted != 1 {
		t.Errorf("%d requests started a pass, want 1", accepted)
	}
	id := got[0].p.ID

	// Live progress: the handover is at power_off, fence done.
	var live passView
	b, _ := json.Marshal(r.admin("GET", fmt.Sprintf("/api/v1/reconcile/passes/%d", id), nil, 200))
	json.Unmarshal(b, &live)
	if live.State != "running" || len(live.Handovers) != 1 || live.Handovers[0].Step != lease.StepPowerOff ||
		len(live.Handovers[0].Steps) != 2 || live.Handovers[0].Steps[0].Outcome != "done" || live.Handovers[0].Steps[1].Outcome != "running" {
		t.Errorf("pass while held = %+v", live)
	}

	release()
	p := r.waitPass(id)
	if p.State != "done" || p.Result.Started != 1 || p.Result.Completed != 1 || p.Trigger != "api" || p.By != "admin" ||
		len(p.Handovers) != 1 || p.Handovers[0].Status != lease.HandoverDone || p.EndedAt.Before(p.StartedAt) {
		t.Errorf("pass after release = %+v", p)
	}
	latest := r.admin("GET", "/api/v1/reconcile/passes/latest", nil, 200)
	if latest["id"] != float64(id) {
		t.Errorf("latest pass = %v, want %d", latest["id"], id)
	}
	// Each request is audited with who asked and which pass it got.
	audit, _ := r.store.ListAudit(context.Background(), 0, 100)
	reqs := 0
	for _, e := range audit {
		if e.Action == "reconcile.request" {
			reqs++
			if e.Actor != "admin" || e.Target != fmt.Sprintf("pass/%d", id) {
				t.Errorf("audit entry %+v", e)
			}
		}
	}
	if reqs != n {
		t.Errorf("%d reconcile requests audited, want %d", reqs, n)
	}
}

func TestReconcilePassLookupErrors(t *testing.T) {
	r := newRig(t, time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC))
	for path, want := range map[string]struct {
		code int
		sub  string
	}{
		"/api/v1/reconcile/passes/abc":    {400, `pass id "abc" is not a positive integer`},
		"/api/v1/reconcile/passes/0":      {400, `pass id "0"`},
		"/api/v1/reconcile/passes/999":    {404, "pass 999"},
		"/api/v1/reconcile/passes/latest": {404, "no reconcile pass"},
		"/api/v1/handovers/abc":           {400, `handover id "abc" is not a positive integer`},
		"/api/v1/handovers/abc/retry":     {400, `handover id "abc"`},
	} {
		method := "GET"
		if strings.HasSuffix(path, "/retry") {
			method = "POST"
		}
		code, body := r.call(r.token, method, path, nil)
		if code != want.code || !strings.Contains(fmt.Sprint(body["error"]), want.sub) {
			t.Errorf("%s %s = %d %v, want %d with %q", method, path, code, body, want.code, want.sub)
		}
	}
}

// levelRecorder is a slog handler that keeps each record's level and
// message.
type levelRecorder struct {
	mu   sync.Mutex
	recs []string
}

func (h *levelRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *levelRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Level.String()+" "+r.Message)
	return nil
}
func (h *levelRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *levelRecorder) WithGroup(string) slog.Handler      { return h }

func (h *levelRecorder) take() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.recs
	h.recs = nil
	return out
}

// TestReconcileIdlePassLogsAtDebug: a pass with nothing to do logs at
// debug (the schedule runs one every 15 s); one that hands a node over
// logs at info.
func TestReconcileIdlePassLogsAtDebug(t *testing.T) {
	r := newRig(t, time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC))
	rec := &levelRecorder{}
	r.rec.Log = slog.New(rec)
	r.reconcile()
	if got := rec.take(); len(got) != 1 || got[0] != "DEBUG reconcile pass" {
		t.Errorf("idle pass logged %q, want one DEBUG line", got)
	}
	r.leaseNow("node-1", "acme")
	r.reconcile()
	if got := strings.Join(rec.take(), "\n"); !strings.Contains(got, "INFO reconcile pass") {
		t.Errorf("a pass that handed a node over logged %q, want an INFO line", got)
	}
	r.reconcile()
	if got := rec.take(); len(got) != 1 || got[0] != "DEBUG reconcile pass" {
		t.Errorf("the next, idle pass logged %q", got)
	}
}
