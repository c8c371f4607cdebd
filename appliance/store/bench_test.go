package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/lease"
	"github.com/malleable-cloud/malleable/appliance/store"
)

// The benchmark fleet: leases are spread evenly over benchNodes nodes and
// benchTenants tenants.
const (
	benchNodes   = 1000
	benchTenants = 50
	leaseLen     = 4 * time.Hour // each seeded lease lasts this long ...
	leaseGap     = 6 * time.Hour // ... and starts this long after the previous one on its node
)

func benchNode(i int) string { return fmt.Sprintf("n%04d", i%benchNodes) }

// seededStart is where the j-th of perNode seeded leases of node
// benchNode(i) starts:
// half of each node's leases lie before now, and nodes are staggered by up
// to five hours so that not every lease starts at the same instant.
func seededStart(i, j, perNode int) time.Time {
	return now.Add(time.Duration(j-perNode/2)*leaseGap + time.Duration(i%benchNodes%6)*time.Hour)
}

// benchStore returns a store holding existing leases, written straight into
// the tables in one transaction: going through CreateLease would cost a
// synced commit per lease. The leases of a node never overlap; a tenth of
// them are cancelled.
func benchStore(b *testing.B, existing int) *store.Store {
	b.Helper()
	ctx := context.Background()
	s, path := newStore(b)
	db := rawDB(b, path)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Rollback()
	exec := func(q string, args ...any) {
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			b.Fatalf("%s: %v", q, err)
		}
	}
	created := now.Add(-365 * 24 * time.Hour).UnixMilli()
	for i := range benchTenants {
		exec(`INSERT INTO tenants (id, name, state, created_at) VALUES (?, ?, 'ready', ?)`, i+1, fmt.Sprintf("t%02d", i), created)
	}
	for i := range benchNodes {
		exec(`INSERT INTO nodes (id, name, created_at) VALUES (?, ?, ?)`, i+1, benchNode(i), created)
		exec(`INSERT INTO node_macs (mac, node_id) VALUES (?, ?)`, fmt.Sprintf("02:00:00:00:%02x:%02x", i>>8, i&0xff), i+1)
	}
	ins, err := tx.PrepareContext(ctx,
		`INSERT INTO leases (node_id, tenant_id, start_at, end_at, cancelled, created_at) VALUES (?, ?, ?, ?, ?, ?)`)
	if err != nil {
		b.Fatal(err)
	}
	defer ins.Close()
	perNode := existing / benchNodes
	for i := range benchNodes {
		for j := range perNode {
			start := seededStart(i, j, perNode)
			if _, err := ins.ExecContext(ctx, i+1, (i+j)%benchTenants+1,
				start.UnixMilli(), start.Add(leaseLen).UnixMilli(), j%10 == 9, created); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	var count int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM leases`).Scan(&count); err != nil || count != perNode*benchNodes {
		b.Fatalf("seeded %d leases (%v), want %d", count, err, perNode*benchNodes)
	}
	return s
}

// BenchmarkCreateLease measures CreateLease, overlap check included, as the
// lease table grows. "free" creates a lease that fits after a node's
// others; "conflict" asks for time a live lease already holds.
func BenchmarkCreateLease(b *testing.B) {
	ctx := context.Background()
	lim := lease.DefaultLimits()
	for _, existing := range []int{1_000, 10_000, 50_000} {
		b.Run(fmt.Sprintf("existing=%d", existing), func(b *testing.B) {
			s := benchStore(b, existing)
			perNode := existing / benchNodes

			b.Run("conflict", func(b *testing.B) {
				i := 0
				for b.Loop() {
					// One to two hours into the node's lease that starts
					// around now.
					start := seededStart(i, perNode/2, perNode).Add(time.Hour)
					_, err := s.CreateLease(ctx, lease.Lease{Node: benchNode(i), Tenant: "t00",
						Start: start, End: start.Add(time.Hour)}, lim, now)
					if !errors.Is(err, lease.ErrConflict) {
						b.Fatalf("iteration %d: CreateLease(%s, %s): %v, want a conflict", i, benchNode(i), start, err)
					}
					i++
				}
			})

			b.Run("free", func(b *testing.B) {
				// After every seeded lease, an hour per node per round.
				after := seededStart(0, perNode, perNode).Add(24 * time.Hour)
				i := 0
				for b.Loop() {
					start := after.Add(time.Duration(i/benchNodes) * 2 * time.Hour)
					_, err := s.CreateLease(ctx, lease.Lease{Node: benchNode(i), Tenant: "t00",
						Start: start, End: start.Add(time.Hour)}, lim, now)
					if err != nil {
						b.Fatalf("CreateLease: %v", err)
					}
					i++
				}
			})
		})
	}
}

// BenchmarkListLeasesForNode measures listing one node's leases, about 50
// of them, among 50,000.
func BenchmarkListLeasesForNode(b *testing.B) {
	ctx := context.Background()
	const existing = 50_000
	s := benchStore(b, existing)
	want := existing / benchNodes
	i := 0
	for b.Loop() {
		ls, err := s.ListLeases(ctx, store.LeaseFilter{Node: benchNode(i)})
		if err != nil || len(ls) != want {
			b.Fatalf("ListLeases(%s) = %d leases, %v; want %d", benchNode(i), len(ls), err, want)
		}
		i++
	}
}
