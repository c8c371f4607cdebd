package reconcile

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/malleable-cloud/malleable/appliance/allocator/embedded"
	"github.com/malleable-cloud/malleable/appliance/bmc"
	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/lease"
	"github.com/malleable-cloud/malleable/appliance/power"
	"github.com/malleable-cloud/malleable/appliance/reconcile/pass"
	"github.com/malleable-cloud/malleable/appliance/secrets"
	"github.com/malleable-cloud/malleable/appliance/store"
)

// The cron tests run in a synctest bubble: the schedule's minutes pass in
// virtual time, and synctest.Wait lets every pass the schedule started
// finish before the test looks. The store is real SQLite in a temporary
// directory, opened inside the bubble so that database/sql's goroutines
// belong to it; its file I/O is not "durably blocking", so synctest.Wait
// simply waits for it to return, which it always does.

// newCronReconciler returns a reconciler over a fresh store whose passes
// are counted on reg. It must be called inside the bubble.
func newCronReconciler(t *testing.T) (*Reconciler, *prometheus.Registry) {
	t.Helper()
	st, err := store.Open(t.Context(), filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	alloc := embedded.New(st, secrets.NewMemory(), bmc.New(bmc.Options{}))
	reg := prometheus.NewRegistry()
	rec := &Reconciler{
		Store: st, Allocator: alloc, Log: testLogger(t), Now: time.Now, Concurrency: 2,
		Metrics: NewMetrics(reg),
		Machine: &lease.Machine{
			Hardware: power.New(alloc, 0, time.Now).Hardware(), Journal: store.Journal{Store: st, Now: time.Now},
			Project:     func(t string) string { return "malleable-" + t },
			MaxAttempts: 3, PowerOffTimeout: 10 * time.Second, PollInterval: time.Second,
		},
	}
	return rec, reg
}

// passes returns how many reconcile passes reg has seen end, by result.
func passes(t *testing.T, reg *prometheus.Registry) map[string]int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, mf := range mfs {
		if mf.GetName() != "malleable_reconcile_passes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" {
					out[l.GetValue()] += int(m.GetCounter().GetValue())
				}
			}
		}
	}
	return out
}

// startCron runs runCron in the bubble; cancel stops it, and the channel
// yields its result.
func startCron(t *testing.T, schedule string, rec *Reconciler) (context.CancelFunc, <-chan error) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- rec.RunCron(ctx, schedule, testLogger(t)) }()
	return cancel, done
}

func TestCronSchedule(t *testing.T) {
	tests := map[string]struct {
		schedule string
		after    time.Duration // virtual time let pass; the bubble starts on a whole hour
		want     int
	}{
		// A second past the last due pass, so it does not race the test's timer.
		"every 15s for 2m":          {schedule: "@every 15s", after: 2*time.Minute + time.Second, want: 8},
		"every 15s for 14s":         {schedule: "@every 15s", after: 14 * time.Second, want: 0},
		"every minute, five fields": {schedule: "* * * * *", after: 3*time.Minute + time.Second, want: 3},
		"hourly for 59m":            {schedule: "@hourly", after: 59 * time.Minute, want: 0},
		"hourly for 3h":             {schedule: "@hourly", after: 3*time.Hour + time.Second, want: 3},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rec, reg := newCronReconciler(t)
				cancel, done := startCron(t, tc.schedule, rec)
				time.Sleep(tc.after)
				synctest.Wait()
				if got := passes(t, reg); got["ok"] != tc.want || got["error"] != 0 {
					t.Errorf("passes = %v, want %d ok", got, tc.want)
				}
				stopped := time.Now()
				cancel()
				if err := <-done; err != nil {
					t.Fatalf("runCron: %v", err)
				}
				if took := time.Since(stopped); took != 0 {
					t.Errorf("runCron took %s of virtual time to stop", took)
				}
			})
		})
	}
}

func TestCronInvalidSchedule(t *testing.T) {
	tests := map[string]struct {
		schedule string
		wantErr  string
	}{
		"empty":                 {schedule: "", wantErr: `reconcile schedule "": `},
		"prose":                 {schedule: "every 15s", wantErr: `reconcile schedule "every 15s": `},
		"seconds field refused": {schedule: "*/15 * * * * *", wantErr: "expected exactly 5 fields"},
		"bad duration":          {schedule: "@every 15 parsecs", wantErr: "failed to parse duration"},
		"minute out of range":   {schedule: "61 * * * *", wantErr: "above maximum"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			// A cancelled context: should the schedule wrongly be accepted,
			// runCron returns nil at once instead of hanging the test.
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			err := (&Reconciler{}).RunCron(ctx, tc.schedule, testLogger(t))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("runCron(%q) = %v, want an error containing %q", tc.schedule, err, tc.wantErr)
			}
		})
	}
}

// TestCronStopWaitsForRunningPass holds a pass inside a handover (through
// the machine's hook), checks that the schedule does not start a second
// pass meanwhile, then cancels: runCron must not return before the held
// pass has, and the interrupted handover is resumed by the next pass.
func TestCronStopWaitsForRunningPass(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec, reg := newCronReconciler(t)
		ctx := t.Context()
		now := time.Now()
		if _, err := rec.Store.CreateTenant(ctx, inventory.Tenant{Name: "acme", State: inventory.TenantReady}, now); err != nil {
			t.Fatal(err)
		}
		// No BMC: the power step is skipped, nothing leaves the process.
		if _, err := rec.Store.CreateNode(ctx, inventory.Node{Name: "node-1"}, now); err != nil {
			t.Fatal(err)
		}
		if _, err := rec.Store.CreateLease(ctx, lease.Lease{Node: "node-1", Tenant: "acme", Start: now, End: now.Add(time.Hour)},
			lease.DefaultLimits(), now); err != nil {
			t.Fatal(err)
		}
		var entered atomic.Int32
		release := make(chan struct{})
		rec.Machine.Hook = func(point string) {
			if point == "fence:intent" {
				entered.Add(1)
				<-release
			}
		}

		cancel, done := startCron(t, "@every 15s", rec)
		time.Sleep(16 * time.Second)
		synctest.Wait()
		if entered.Load() != 1 {
			t.Fatalf("after 16s, %d passes reached the handover, want 1", entered.Load())
		}
		// Four more ticks while the first pass is held: all skipped.
		time.Sleep(time.Minute)
		synctest.Wait()
		if n, got := entered.Load(), passes(t, reg); n != 1 || len(got) != 0 {
			t.Fatalf("while a pass runs: %d passes in the handover, %v finished; want 1 and none", n, got)
		}

		cancel()
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("runCron returned (%v) while a pass was still running", err)
		default:
		}
		stopped := time.Now()
		close(release)
		if err := <-done; err != nil {
			t.Fatalf("runCron: %v", err)
		}
		if took := time.Since(stopped); took != 0 {
			t.Errorf("runCron took %s of virtual time after the pass ended", took)
		}
		if got := passes(t, reg); got["ok"]+got["error"] != 1 {
			t.Errorf("passes after stop = %v, want exactly the held one", got)
		}

		// The cancelled pass left the handover open at fence (its
		// outcome could not be journaled); the next pass resumes it.
		rec.Machine.Hook = nil
		hs, err := rec.Store.ListHandovers(ctx, store.HandoverFilter{Open: true})
		if err != nil || len(hs) != 1 || hs[0].Step != lease.StepFence || hs[0].Status != lease.HandoverRunning {
			t.Fatalf("open handovers after the interrupted pass = %+v, %v", hs, err)
		}
		res, err := rec.Pass(ctx)
		if err != nil || res.Resumed != 1 || res.Completed != 1 {
			t.Fatalf("resuming pass = %+v, %v", res, err)
		}
		if h, _ := rec.Store.Holder(ctx, "node-1"); h != "acme" {
			t.Errorf("holder after the resumed handover = %q, want acme", h)
		}
	})
}

// TestCronSurvivesPanic: a pass that panics is recovered and logged, and
// the schedule goes on (the order of cron's job wrappers matters here).
func TestCronSurvivesPanic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec, reg := newCronReconciler(t)
		var calls atomic.Int32
		rec.Now = func() time.Time {
			if calls.Add(1) == 1 {
				panic(errors.New("clock exploded"))
			}
			return time.Now()
		}
		cancel, done := startCron(t, "@every 15s", rec)
		time.Sleep(2*time.Minute + time.Second)
		synctest.Wait()
		// The first of eight passes panicked before it was counted.
		if got := passes(t, reg); got["ok"] != 7 {
			t.Errorf("passes = %v, want 7 ok after one panic", got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// TestCronPassesInHistory: the schedule's passes are recorded like the
// API's, and only the last PassHistory of them are kept.
func TestCronPassesInHistory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec, reg := newCronReconciler(t)
		cancel, done := startCron(t, "@every 15s", rec)
		time.Sleep(25*15*time.Second + time.Second)
		synctest.Wait()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if got := passes(t, reg); got["ok"] != 25 {
			t.Fatalf("passes = %v, want 25 ok", got)
		}
		latest, ok := rec.LookupPass(0)
		if !ok || latest.ID != 25 || latest.Trigger != pass.TriggerCron || latest.State != pass.Done || latest.EndedAt.IsZero() {
			t.Errorf("latest pass = %+v, %v", latest, ok)
		}
		if _, ok := rec.LookupPass(25 - PassHistory + 1); !ok {
			t.Errorf("pass %d is not remembered", 25-PassHistory+1)
		}
		if p, ok := rec.LookupPass(25 - PassHistory); ok {
			t.Errorf("pass %d is still remembered: %+v", p.ID, p)
		}
	})
}

// TestCronJoinsAPIPass: while a pass an admin started runs, the schedule's
// ticks wait for it instead of running passes of their own; a retry's
// pass is queued behind it and runs when it ends.
func TestCronJoinsAPIPass(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec, reg := newCronReconciler(t)
		ctx := t.Context()
		now := time.Now()
		rec.Store.CreateTenant(ctx, inventory.Tenant{Name: "acme", State: inventory.TenantReady}, now)
		rec.Store.CreateNode(ctx, inventory.Node{Name: "node-1"}, now)
		if _, err := rec.Store.CreateLease(ctx, lease.Lease{Node: "node-1", Tenant: "acme", Start: now, End: now.Add(time.Hour)},
			lease.DefaultLimits(), now); err != nil {
			t.Fatal(err)
		}
		var entered atomic.Int32
		release := make(chan struct{})
		rec.Machine.Hook = func(point string) {
			if point == "fence:intent" {
				entered.Add(1)
				<-release
			}
		}
		sctx, stopServe := context.WithCancel(ctx)
		served := make(chan error, 1)
		go func() { served <- rec.Serve(sctx) }()

		p, started, err := rec.Start(pass.TriggerAPI, "admin", false)
		if err != nil || !started || p.State != pass.Running {
			t.Fatalf("Start = %+v, %v, %v", p, started, err)
		}
		synctest.Wait()
		cancel, done := startCron(t, "@every 15s", rec)
		time.Sleep(time.Minute + time.Second)
		synctest.Wait()
		if n, got := entered.Load(), passes(t, reg); n != 1 || len(got) != 0 {
			t.Fatalf("while the API's pass runs: %d in the handover, %v ended; want 1 and none", n, got)
		}
		again, started, _ := rec.Start(pass.TriggerAPI, "admin", false)
		if started || again.ID != p.ID {
			t.Errorf("second Start = %+v (started %v), want pass %d", again, started, p.ID)
		}
		q, started, _ := rec.Start(pass.TriggerRetry, "admin", true)
		if !started || q.State != pass.Queued || q.QueuedBehind != p.ID {
			t.Errorf("fresh Start = %+v (started %v), want a pass queued behind %d", q, started, p.ID)
		}
		close(release)
		synctest.Wait()
		if got := passes(t, reg); got["ok"] != 2 {
			t.Errorf("after release: %v, want the API's pass and the queued one", got)
		}
		for _, id := range []int64{p.ID, q.ID} {
			if r, ok := rec.LookupPass(id); !ok || r.State != pass.Done {
				t.Errorf("pass %d = %+v", id, r)
			}
		}
		cancel()
		stopServe()
		if err := errors.Join(<-done, <-served); err != nil {
			t.Fatal(err)
		}
		if _, _, err := rec.Start(pass.TriggerAPI, "admin", false); !errors.Is(err, ErrNotServing) {
			t.Errorf("Start after Serve returned: %v, want ErrNotServing", err)
		}
	})
}

// TestServeInterruptedAndPanickingPasses: a pass Serve runs when the
// daemon stops is recorded as interrupted, its handover left to resume;
// a pass that panics is logged and Serve goes on with the next one.
func TestServeInterruptedAndPanickingPasses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec, _ := newCronReconciler(t)
		ctx := t.Context()
		now := time.Now()
		rec.Store.CreateTenant(ctx, inventory.Tenant{Name: "acme", State: inventory.TenantReady}, now)
		rec.Store.CreateNode(ctx, inventory.Node{Name: "node-1"}, now)
		if _, err := rec.Store.CreateLease(ctx, lease.Lease{Node: "node-1", Tenant: "acme", Start: now, End: now.Add(time.Hour)},
			lease.DefaultLimits(), now); err != nil {
			t.Fatal(err)
		}
		release := make(chan struct{})
		rec.Machine.Hook = func(point string) {
			if point == "power_off:intent" {
				<-release
			}
		}
		serve := func() (context.CancelFunc, chan error) {
			sctx, stop := context.WithCancel(ctx)
			served := make(chan error, 1)
			go func() { served <- rec.Serve(sctx) }()
			return stop, served
		}
		stop, served := serve()
		p, _, err := rec.Start(pass.TriggerAPI, "admin", false)
		if err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		stop() // the daemon shuts down while the handover is at power_off
		close(release)
		if err := <-served; err != nil {
			t.Fatal(err)
		}
		got, _ := rec.LookupPass(p.ID)
		if got.State != pass.Failed || !strings.Contains(got.Error, "interrupted") || len(got.Handovers) != 1 ||
			got.Handovers[0].Status != lease.HandoverRunning {
			t.Errorf("interrupted pass = %+v", got)
		}

		// A new Serve (the restarted daemon); the first pass panics.
		var calls atomic.Int32
		rec.Now = func() time.Time {
			if calls.Add(1) == 1 {
				panic("clock exploded")
			}
			return time.Now()
		}
		stop, served = serve()
		defer func() { stop(); <-served }()
		synctest.Wait() // Serve has started
		p1, _, err := rec.Start(pass.TriggerAPI, "admin", false)
		if err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got, _ := rec.LookupPass(p1.ID); got.State != pass.Failed || !strings.Contains(got.Error, "panicked") {
			t.Errorf("panicking pass = %+v", got)
		}
		p2, started, err := rec.Start(pass.TriggerAPI, "admin", false)
		if err != nil || !started {
			t.Fatalf("Start after a panic = %v, %v", started, err)
		}
		synctest.Wait()
		if got, _ := rec.LookupPass(p2.ID); got.State != pass.Done || got.Result.Resumed != 1 || got.Result.Completed != 1 {
			t.Errorf("the pass after the panic = %+v", got)
		}
	})
}

// testLogger sends the reconciler's logs to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}
