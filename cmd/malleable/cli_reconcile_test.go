package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/client"
	"github.com/malleable-cloud/malleable/appliance/lease"
)

// TestProgressReport: each ended step is printed once, a stuck handover is
// named with the retry command, and a pass with no news for a while gets a
// line saying where its handovers are.
func TestProgressReport(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	h := client.PassHandover{Handover: lease.Handover{ID: 7, Node: "rack-1", From: "alpha", To: "beta", Step: lease.StepPowerOff, Status: lease.HandoverRunning},
		Steps: []client.StepRun{
			{Step: lease.StepFence, StartedAt: t0, EndedAt: t0.Add(20 * time.Millisecond), Outcome: "done"},
			{Step: lease.StepPowerOff, StartedAt: t0.Add(20 * time.Millisecond), Outcome: "running"},
		}}
	p := client.Pass{ID: 4, State: client.PassRunning, Handovers: []client.PassHandover{h}}
	var b strings.Builder
	pr := newProgress(&b, 0)
	pr.report(p)
	pr.report(p)
	if got, want := b.String(), "handover 7 rack-1 alpha → beta: fence … done (0.0s)\n"; got != want {
		t.Errorf("first reports:\n%q\nwant\n%q", got, want)
	}

	b.Reset()
	pr.last, pr.start = time.Now().Add(-stillRunningGap), time.Now().Add(-30*time.Second)
	pr.report(p)
	if got := b.String(); got != "… 30s: pass 4 running; handover 7 rack-1 at power_off\n" {
		t.Errorf("after a quiet while: %q", got)
	}

	b.Reset()
	h.Steps[1].EndedAt, h.Steps[1].Outcome, h.Steps[1].Detail = t0.Add(1220*time.Millisecond), "failed", "read power: timeout"
	h.Status, h.Attempts = lease.HandoverStuck, 3
	p.Handovers[0], p.State = h, client.PassDone
	pr.report(p)
	pr.report(p)
	want := "handover 7 rack-1 alpha → beta: power_off … failed (1.2s, attempt 3): read power: timeout\n" +
		"handover 7 rack-1 alpha → beta: stuck at power_off: fix the cause, then: malleable lease retry 7\n"
	if got := b.String(); got != want {
		t.Errorf("stuck:\n%q\nwant\n%q", got, want)
	}
	if err := passOutcome(p); err == nil || !strings.Contains(err.Error(), "handover 7 rack-1 alpha → beta did not finish: stuck at power_off") {
		t.Errorf("passOutcome = %v", err)
	}
	// Another handover's steps are not printed when following one.
	b.Reset()
	other := newProgress(&b, 8)
	other.report(p)
	if b.Len() != 0 {
		t.Errorf("following handover 8 printed %q", b.String())
	}
}

// TestWatchForgottenPass: a pass the appliance no longer knows (404, as
// after a restart) ends the watch at once with what to do, instead of being
// retried as a transient failure.
func TestWatchForgottenPass(t *testing.T) {
	var polls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		polls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"error":"no reconcile pass 4"}`))
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var b strings.Builder
	_, err := watch(ctx, client.New(srv.URL, "t"), newProgress(&b, 0), client.Pass{ID: 4, State: client.PassRunning})
	if err == nil || !strings.Contains(err.Error(), "pass 4 is no longer known to the appliance") {
		t.Fatalf("watch: %v", err)
	}
	if n := polls.Load(); n != 1 {
		t.Errorf("%d polls, want 1: a 404 is final", n)
	}
}
