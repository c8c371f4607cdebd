package appliance

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/allocator/embedded"
	"github.com/malleable-cloud/malleable/appliance/bmc"
	"github.com/malleable-cloud/malleable/appliance/lease"
	"github.com/malleable-cloud/malleable/appliance/power"
	"github.com/malleable-cloud/malleable/appliance/reconcile"
	"github.com/malleable-cloud/malleable/appliance/reconcile/pass"
	"github.com/malleable-cloud/malleable/appliance/secrets"
	"github.com/malleable-cloud/malleable/appliance/store"
)

// The benchmark fleet. Every size has the same nodes and tenants, so only
// the number of leases varies between the sub-benchmarks.
const (
	benchFleetNodes   = 10_000
	benchFleetTenants = 1_000
	benchLeaseLen     = 4 * time.Hour // each lease lasts this long ...
	benchLeaseGap     = 6 * time.Hour // ... and starts this long after the previous one on its node
)

var benchNow = time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)

// benchFleet is a store holding a converged fleet: every node whose lease
// is active at benchNow is held by, and allocated to, its lessee; no other
// node is held or allocated.
type benchFleet struct {
	store *store.Store
	raw   *sql.DB
	// active lists the ids of the nodes with an active lease.
	active []int
	// tenantOf is the tenant id of the active lease, by node id.
	tenantOf map[int]int
}

func benchNodeName(id int) string   { return fmt.Sprintf("n%05d", id) }
func benchTenantName(id int) string { return fmt.Sprintf("t%04d", id) }

// newBenchFleet writes the fleet straight into the tables, in one
// transaction through a second connection: going through the store's API
// would cost a synced commit per row. Lease k is node k%nodes's
// (k/nodes)-th, tenant k%tenants's; a node's leases follow each other
// 6 h apart, half of them before now, and nodes are staggered by up to 5 h
// so that two thirds of the leased nodes have a lease active at now.
func newBenchFleet(b *testing.B, leases int) *benchFleet {
	b.Helper()
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "m.db")
	st, err := store.Open(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	raw, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { raw.Close() })
	f := &benchFleet{store: st, raw: raw, tenantOf: map[int]int{}}

	tx, err := raw.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Rollback()
	prep := func(q string) *sql.Stmt {
		s, err := tx.PrepareContext(ctx, q)
		if err != nil {
			b.Fatalf("%s: %v", q, err)
		}
		return s
	}
	exec := func(s *sql.Stmt, args ...any) {
		if _, err := s.ExecContext(ctx, args...); err != nil {
			b.Fatal(err)
		}
	}
	created := benchNow.Add(-365 * 24 * time.Hour).UnixMilli()
	insTenant := prep(`INSERT INTO tenants (id, name, state, created_at) VALUES (?, ?, 'ready', ?)`)
	for id := 1; id <= benchFleetTenants; id++ {
		exec(insTenant, id, benchTenantName(id), created)
	}
	insNode := prep(`INSERT INTO nodes (id, name, created_at) VALUES (?, ?, ?)`) // no BMC
	for id := 1; id <= benchFleetNodes; id++ {
		exec(insNode, id, benchNodeName(id), created)
	}
	insLease := prep(`INSERT INTO leases (node_id, tenant_id, start_at, end_at, created_at) VALUES (?, ?, ?, ?, ?)`)
	insHolder := prep(`INSERT INTO node_holders (node_id, tenant_id) VALUES (?, ?)`)
	insAlloc := prep(`INSERT INTO allocations (node_id, project) VALUES (?, ?)`)
	for k := range leases {
		node, tenant := k%benchFleetNodes+1, k%benchFleetTenants+1
		j, perNode := k/benchFleetNodes, (leases+benchFleetNodes-1-(node-1))/benchFleetNodes
		start := benchNow.Add(time.Duration(j-perNode/2)*benchLeaseGap - time.Duration(node%6)*time.Hour)
		end := start.Add(benchLeaseLen)
		exec(insLease, node, tenant, start.UnixMilli(), end.UnixMilli(), created)
		if !start.After(benchNow) && end.After(benchNow) {
			f.active = append(f.active, node)
			f.tenantOf[node] = tenant
			exec(insHolder, node, tenant)
			exec(insAlloc, node, "malleable-"+benchTenantName(tenant))
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	return f
}

// reconciler returns the appliance's reconciler over the fleet, with the
// embedded allocator. A converged pass never reaches IPMI, and the nodes
// have no BMC anyway, so bmc.New's defaults are enough.
func (f *benchFleet) reconciler() *reconcile.Reconciler {
	alloc := embedded.New(f.store, secrets.NewMemory(), bmc.New(bmc.Options{}))
	now := func() time.Time { return benchNow }
	return &reconcile.Reconciler{
		Store: f.store, Allocator: alloc, Log: slog.New(slog.DiscardHandler), Now: now, Concurrency: 8,
		Machine: &lease.Machine{
			Hardware: power.New(alloc, 0, time.Now).Hardware(), Journal: store.Journal{Store: f.store, Now: now},
			Project:     func(t string) string { return "malleable-" + t },
			MaxAttempts: 5, PowerOffTimeout: time.Minute, PollInterval: 250 * time.Millisecond,
		},
	}
}

// BenchmarkReconcilePass measures a reconcile pass over 10,000 nodes and
// 1,000 tenants. In the converged runs nothing needs a handover, which
// measures the pass's fixed cost (one NodeStates query, one NodeProjects
// query, the drift comparison). In the handover run, 1% of the nodes
// (100) lost their holder and allocation before each pass, so each pass
// runs 100 free → tenant handovers through the SQLite journal; the nodes
// have no BMC, so the power step is skipped and the cost is the journal's.
func BenchmarkReconcilePass(b *testing.B) {
	ctx := context.Background()
	for _, leases := range []int{1_000, 10_000, 50_000} {
		b.Run(fmt.Sprintf("converged/leases=%d", leases), func(b *testing.B) {
			f := newBenchFleet(b, leases)
			rec := f.reconciler()
			res := mustPass(b, rec)
			if res.Nodes != benchFleetNodes || res.Started+res.Resumed+res.Drift+res.Stuck != 0 {
				b.Fatalf("fleet not converged: %+v", res)
			}
			for b.Loop() {
				if _, err := rec.Pass(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(f.active)), "held-nodes")
		})
	}

	b.Run("handovers=1%/leases=50000", func(b *testing.B) {
		f := newBenchFleet(b, 50_000)
		rec := f.reconciler()
		var moved []any
		for i := 0; i < len(f.active) && len(moved) < benchFleetNodes/100; i += len(f.active) / (benchFleetNodes / 100) {
			moved = append(moved, f.active[i])
		}
		in := "(?" + strings.Repeat(",?", len(moved)-1) + ")"
		unhold := func() {
			for _, q := range []string{`DELETE FROM node_holders WHERE node_id IN `, `DELETE FROM allocations WHERE node_id IN `} {
				if _, err := f.raw.ExecContext(ctx, q+in, moved...); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ResetTimer()
		for range b.N {
			b.StopTimer()
			unhold()
			b.StartTimer()
			res, err := rec.Pass(ctx)
			if err != nil || res.Started != len(moved) || res.Completed != len(moved) {
				b.Fatalf("pass = %+v, %v; want %d handovers completed", res, err, len(moved))
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(len(moved)*b.N)/b.Elapsed().Seconds(), "handovers/s")
		// The last pass left the fleet converged again.
		if res := mustPass(b, rec); res.Started+res.Drift != 0 {
			b.Fatalf("after the handovers: %+v", res)
		}
		for _, id := range moved[:3] {
			node := benchNodeName(id.(int))
			if h, _ := f.store.Holder(ctx, node); h != benchTenantName(f.tenantOf[id.(int)]) {
				b.Fatalf("holder of %s = %q", node, h)
			}
		}
	})
}

func mustPass(b *testing.B, rec *reconcile.Reconciler) pass.Result {
	b.Helper()
	res, err := rec.Pass(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return res
}
