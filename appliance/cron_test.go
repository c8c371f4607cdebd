package appliance

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/malleable-cloud/malleable/appliance/bmc"
	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/lease"
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
	alloc := newEmbeddedAllocator(st, secrets.NewMemory(), bmc.New(bmc.Options{}))
	reg := prometheus.NewRegistry()
	rec := &Reconciler{
		Store: st, Allocator: alloc, Log: testLogger(t), Now: time.Now, Concurrency: 2,
		Metrics: NewReconcileMetrics(reg),
		Machine: &lease.Machine{
			Hardware: hardware{NewPowerPlane(alloc, 0, time.Now)}, Journal: store.Journal{Store: st, Now: time.Now},
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
	go func() { done <- runCron(ctx, schedule, rec, testLogger(t)) }()
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
			err := runCron(ctx, tc.schedule, &Reconciler{}, testLogger(t))
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
