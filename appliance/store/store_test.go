package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/audit"
	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/lease"
	"github.com/malleable-cloud/malleable/appliance/store"
)

// now is the fixed instant the tests run at.
var now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// hours returns now plus n hours.
func hours(n float64) time.Time { return now.Add(time.Duration(n * float64(time.Hour))) }

// openStore opens the database at path and closes it when the test ends.
func openStore(t testing.TB, path string) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// newStore opens a fresh database in a temporary directory.
func newStore(t testing.TB) (*store.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "malleable.db")
	return openStore(t, path), path
}

// rawDB opens a plain database/sql handle on the same file, bypassing the
// store, for what its API cannot do.
func rawDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatalf("open raw %s: %v", path, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func mustTenant(t testing.TB, s *store.Store, name string) inventory.Tenant {
	t.Helper()
	tn := inventory.Tenant{Name: name}
	if err := tn.Normalize(); err != nil {
		t.Fatalf("normalize tenant %s: %v", name, err)
	}
	got, err := s.CreateTenant(context.Background(), tn, now)
	if err != nil {
		t.Fatalf("CreateTenant(%s): %v", name, err)
	}
	return got
}

func mustNode(t testing.TB, s *store.Store, name string, macs ...string) inventory.Node {
	t.Helper()
	n := inventory.Node{Name: name, MACs: macs}
	if err := n.Normalize(); err != nil {
		t.Fatalf("normalize node %s: %v", name, err)
	}
	got, err := s.CreateNode(context.Background(), n, now)
	if err != nil {
		t.Fatalf("CreateNode(%s): %v", name, err)
	}
	return got
}

// mustLease creates a lease of node to tenant over [start, end) as if the
// request came at at, which lets a test record leases that have since ended.
func mustLease(t testing.TB, s *store.Store, node, tenant string, start, end, at time.Time) lease.Lease {
	t.Helper()
	l, err := s.CreateLease(context.Background(),
		lease.Lease{Node: node, Tenant: tenant, Start: start, End: end}, lease.DefaultLimits(), at)
	if err != nil {
		t.Fatalf("CreateLease(%s, %s, %s–%s): %v", node, tenant, start, end, err)
	}
	return l
}

// checkErr fails t unless err matches: nil when substr is empty, otherwise
// an error wrapping every one of sentinels whose message contains substr.
func checkErr(t testing.TB, err error, substr string, sentinels ...error) {
	t.Helper()
	if substr == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("got no error, want one containing %q", substr)
	}
	for _, s := range sentinels {
		if !errors.Is(err, s) {
			t.Errorf("error %q does not wrap %v", err, s)
		}
	}
	if !strings.Contains(err.Error(), substr) {
		t.Errorf("error %q does not contain %q", err, substr)
	}
}

func TestOpenMigrates(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "malleable.db")
	s, err := store.Open(ctx, path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if v, err := s.SchemaVersion(ctx); err != nil || v != store.LatestSchemaVersion() || v < 1 {
		t.Fatalf("SchemaVersion() = %d, %v; want %d", v, err, store.LatestSchemaVersion())
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	mustTenant(t, s, "acme")
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	// Re-opening applies nothing: running 0001 again would fail on
	// CREATE TABLE, and the data written before is still there.
	s = openStore(t, path)
	if v, err := s.SchemaVersion(ctx); err != nil || v != store.LatestSchemaVersion() {
		t.Fatalf("after re-open SchemaVersion() = %d, %v; want %d", v, err, store.LatestSchemaVersion())
	}
	if _, err := s.GetTenant(ctx, "acme"); err != nil {
		t.Fatalf("after re-open GetTenant: %v", err)
	}

	var tables []string
	rows, err := rawDB(t, path).QueryContext(ctx, `SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, n)
	}
	if want := []string{"allocations", "audit", "handover_journal", "handovers", "leases", "node_holders", "node_macs", "nodes", "tenant_job_steps", "tenant_jobs", "tenants"}; !reflect.DeepEqual(tables, want) {
		t.Errorf("tables = %v, want %v", tables, want)
	}
}

func TestOpenRefuses(t *testing.T) {
	tests := map[string]struct {
		path    func(t *testing.T) string
		wantErr string
	}{
		"empty path":        {func(*testing.T) string { return "" }, `invalid database path ""`},
		"query in path":     {func(t *testing.T) string { return t.TempDir() + "/x.db?mode=ro" }, "invalid database path"},
		"fragment in path":  {func(t *testing.T) string { return t.TempDir() + "/x#y.db" }, "invalid database path"},
		"missing directory": {func(t *testing.T) string { return t.TempDir() + "/nope/x.db" }, "open store"},
		"a directory":       {func(t *testing.T) string { return t.TempDir() }, "open store"},
		"not a database":    {notADatabase, "open store"},
		"newer schema": {withUserVersion(store.LatestSchemaVersion()+1, true),
			fmt.Sprintf("database schema version %d is newer than this binary's %d: upgrade malleable", store.LatestSchemaVersion()+1, store.LatestSchemaVersion())},
		"much newer, no data": {withUserVersion(99, false), "database schema version 99 is newer"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			path := tc.path(t)
			s, err := store.Open(context.Background(), path)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%s) succeeded, want an error containing %q", path, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Open(%s) error = %q, want it to contain %q", path, err, tc.wantErr)
			}
		})
	}
}

// withUserVersion returns a path to a database whose user_version is v, as
// if a newer binary had written it; with data, it also holds a tenant.
func withUserVersion(v int, data bool) func(t *testing.T) string {
	return func(t *testing.T) string {
		path := filepath.Join(t.TempDir(), "newer.db")
		if data {
			s, err := store.Open(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			mustTenant(t, s, "acme")
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}
		db := rawDB(t, path)
		if _, err := db.Exec(fmt.Sprintf("PRAGMA user_version = %d", v)); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		return path
	}
}

// notADatabase returns a path to a file that is not SQLite.
func notADatabase(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "junk.db")
	if err := os.WriteFile(path, []byte(strings.Repeat("this is not sqlite ", 500)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRestartKeepsEverything(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "malleable.db")
	s, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}

	acme := inventory.Tenant{Name: "acme", Description: "Acme Corp", ForemanURL: "https://foreman.acme.example"}
	if _, err := s.CreateTenant(ctx, acme, now); err != nil {
		t.Fatal(err)
	}
	mustTenant(t, s, "beta")
	n1 := mustNode(t, s, "n1", "AA:BB:CC:00:00:02", "aa-bb-cc-00-00-01", "aabb.cc00.0003")
	if want := []string{"aa:bb:cc:00:00:01", "aa:bb:cc:00:00:02", "aa:bb:cc:00:00:03"}; !reflect.DeepEqual(n1.MACs, want) {
		t.Fatalf("CreateNode MACs = %v, want %v", n1.MACs, want)
	}
	n2 := inventory.Node{Name: "n2", Description: "rack 4", MACs: []string{"aa:bb:cc:00:00:09"},
		BMC: inventory.BMC{Host: "10.0.0.9", User: "admin"}}
	if err := n2.Normalize(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateNode(ctx, n2, now); err != nil {
		t.Fatal(err)
	}
	mustLease(t, s, "n1", "acme", hours(-10), hours(-8), hours(-11)) // ended
	mustLease(t, s, "n1", "beta", hours(-1), hours(1), now)          // active
	mustLease(t, s, "n2", "acme", hours(2), hours(4), now)           // scheduled
	c := mustLease(t, s, "n2", "beta", hours(5), hours(6), now)
	if _, err := s.CancelLease(ctx, c.ID, now); err != nil {
		t.Fatal(err)
	}
	for i, action := range []string{"tenant.create", "node.create", "lease.create"} {
		if _, err := s.AppendAudit(ctx, audit.Entry{At: now.Add(time.Duration(i) * time.Second),
			Actor: "admin", Action: action, Target: "x", Result: "ok"}); err != nil {
			t.Fatal(err)
		}
	}

	type snapshot struct {
		Tenants []inventory.Tenant
		Nodes   []inventory.Node
		Leases  []lease.Lease
		Audit   []audit.Entry
	}
	take := func(s *store.Store) snapshot {
		t.Helper()
		var snap snapshot
		var err1, err2, err3, err4 error
		snap.Tenants, err1 = s.ListTenants(ctx)
		snap.Nodes, err2 = s.ListNodes(ctx)
		snap.Leases, err3 = s.ListLeases(ctx, store.LeaseFilter{})
		snap.Audit, err4 = s.ListAudit(ctx, 0, 100)
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			t.Fatal(err)
		}
		return snap
	}
	before := take(s)
	if len(before.Tenants) != 2 || len(before.Nodes) != 2 || len(before.Leases) != 4 || len(before.Audit) != 3 {
		t.Fatalf("before restart: %d tenants, %d nodes, %d leases, %d audit entries; want 2, 2, 4, 3",
			len(before.Tenants), len(before.Nodes), len(before.Leases), len(before.Audit))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	after := take(openStore(t, path))
	if !reflect.DeepEqual(after, before) {
		t.Errorf("after restart:\n%+v\nwant\n%+v", after, before)
	}
	if got := after.Nodes[0].MACs; !reflect.DeepEqual(got, n1.MACs) {
		t.Errorf("n1 MACs after restart = %v, want %v", got, n1.MACs)
	}
	if got := after.Nodes[1]; got.BMC != (inventory.BMC{Host: "10.0.0.9", Port: 623, User: "admin"}) || got.Description != "rack 4" {
		t.Errorf("n2 after restart = %+v", got)
	}
	if got := after.Tenants[0]; got.ForemanURL != acme.ForemanURL || got.Description != acme.Description || got.State != inventory.TenantRegistered {
		t.Errorf("acme after restart = %+v", got)
	}
	if !after.Leases[3].Cancelled || after.Leases[3].ID != c.ID {
		t.Errorf("last lease after restart = %+v, want cancelled lease %d", after.Leases[3], c.ID)
	}
}

func TestTenants(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	mustTenant(t, s, "acme")

	tests := map[string]struct {
		tenant  inventory.Tenant
		wantErr string
	}{
		"new":                 {inventory.Tenant{Name: "beta", Description: "Beta Ltd"}, ""},
		"state is overridden": {inventory.Tenant{Name: "gamma", State: inventory.TenantReady}, ""},
		"duplicate":           {inventory.Tenant{Name: "acme"}, `tenant "acme": already exists`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := s.CreateTenant(ctx, tc.tenant, now.Add(1234567*time.Nanosecond))
			checkErr(t, err, tc.wantErr, store.ErrExists)
			if tc.wantErr != "" {
				return
			}
			if got.State != inventory.TenantRegistered || !got.CreatedAt.Equal(now.Add(time.Millisecond)) {
				t.Errorf("CreateTenant() = %+v, want state registered created at %s", got, now.Add(time.Millisecond))
			}
			stored, err := s.GetTenant(ctx, tc.tenant.Name)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(stored, got) {
				t.Errorf("GetTenant() = %+v, want %+v", stored, got)
			}
		})
	}

	list, err := s.ListTenants(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tn := range list {
		names = append(names, tn.Name)
	}
	if want := []string{"acme", "beta", "gamma"}; !reflect.DeepEqual(names, want) {
		t.Errorf("ListTenants() names = %v, want %v", names, want)
	}
}

func TestCreateNode(t *testing.T) {
	ctx := context.Background()
	tests := map[string]struct {
		name    string
		macs    []string
		wantErr string
	}{
		"new":                       {"n2", []string{"aa:bb:cc:00:00:04", "aa:bb:cc:00:00:03"}, ""},
		"no MACs":                   {"n2", nil, ""},
		"duplicate name":            {"n1", []string{"aa:bb:cc:00:00:03"}, `node "n1": already exists`},
		"MAC of another node":       {"n2", []string{"aa:bb:cc:00:00:03", "aa:bb:cc:00:00:02"}, `MAC aa:bb:cc:00:00:02 belongs to node "n1"`},
		"MAC in another notation":   {"n2", []string{"AABB.CC00.0001"}, `MAC aa:bb:cc:00:00:01 belongs to node "n1"`},
		"name checked before MACs":  {"n1", []string{"aa:bb:cc:00:00:01"}, `node "n1": already exists`},
		"only the second MAC taken": {"n2", []string{"aa:bb:cc:00:00:00", "aa:bb:cc:00:00:02"}, `belongs to node "n1"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s, _ := newStore(t)
			mustNode(t, s, "n1", "aa:bb:cc:00:00:01", "aa:bb:cc:00:00:02")
			n := inventory.Node{Name: tc.name, MACs: tc.macs}
			if err := n.Normalize(); err != nil {
				t.Fatal(err)
			}
			got, err := s.CreateNode(ctx, n, now)
			checkErr(t, err, tc.wantErr, store.ErrExists)
			if tc.wantErr == "" {
				stored, err := s.GetNode(ctx, tc.name)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(stored, got) {
					t.Errorf("GetNode() = %+v, want %+v", stored, got)
				}
				return
			}
			// A refused node leaves nothing behind: no row, no MAC.
			nodes, err := s.ListNodes(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(nodes) != 1 || !reflect.DeepEqual(nodes[0].MACs, []string{"aa:bb:cc:00:00:01", "aa:bb:cc:00:00:02"}) {
				t.Fatalf("after a refused create, nodes = %+v, want only n1 unchanged", nodes)
			}
			mustNode(t, s, "n9", "aa:bb:cc:00:00:00", "aa:bb:cc:00:00:03")
		})
	}
}

func TestGetMissing(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	mustTenant(t, s, "acme")
	mustNode(t, s, "n1")
	l := mustLease(t, s, "n1", "acme", now, hours(1), now)

	tests := map[string]struct {
		get     func() error
		wantErr string
	}{
		"tenant":               {func() error { _, err := s.GetTenant(ctx, "ghost"); return err }, `tenant "ghost": not found`},
		"node":                 {func() error { _, err := s.GetNode(ctx, "ghost"); return err }, `node "ghost": not found`},
		"lease":                {func() error { _, err := s.GetLease(ctx, l.ID+1); return err }, fmt.Sprintf("lease %d: not found", l.ID+1)},
		"tenant is not a node": {func() error { _, err := s.GetNode(ctx, "acme"); return err }, `node "acme"`},
		"names are exact":      {func() error { _, err := s.GetTenant(ctx, "ACME"); return err }, `tenant "ACME"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			checkErr(t, tc.get(), tc.wantErr, store.ErrNotFound)
		})
	}
}

func TestAudit(t *testing.T) {
	ctx := context.Background()
	s, path := newStore(t)
	var entries []audit.Entry // entries[i] is the (i+1)th appended
	for i := range 5 {
		e, err := s.AppendAudit(ctx, audit.Entry{
			At:    now.Add(time.Duration(i)*time.Minute + 1500*time.Microsecond),
			Actor: "admin", Action: "lease.create", Target: fmt.Sprintf("n%d", i),
			Detail: "from the CLI", Result: "ok",
		})
		if err != nil {
			t.Fatal(err)
		}
		if want := now.Add(time.Duration(i)*time.Minute + time.Millisecond); !e.At.Equal(want) {
			t.Errorf("AppendAudit At = %s, want it stored at millisecond resolution: %s", e.At, want)
		}
		if i > 0 && e.ID <= entries[i-1].ID {
			t.Fatalf("IDs do not increase: %d after %d", e.ID, entries[i-1].ID)
		}
		entries = append(entries, e)
	}
	id := func(n int) int64 { return entries[n-1].ID }

	tests := map[string]struct {
		before int64
		limit  int
		want   []int // entry numbers, 1-based, in order
	}{
		"newest first":         {0, 10, []int{5, 4, 3, 2, 1}},
		"first page":           {0, 2, []int{5, 4}},
		"second page":          {id(4), 2, []int{3, 2}},
		"last page":            {id(2), 2, []int{1}},
		"past the oldest":      {id(1), 2, nil},
		"before beyond newest": {id(5) + 100, 3, []int{5, 4, 3}},
		"negative before":      {-1, 1, []int{5}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := s.ListAudit(ctx, tc.before, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			want := []audit.Entry{}
			for _, n := range tc.want {
				want = append(want, entries[n-1])
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("ListAudit(%d, %d) =\n%+v\nwant\n%+v", tc.before, tc.limit, got, want)
			}
		})
	}

	t.Run("append-only", func(t *testing.T) {
		db := rawDB(t, path)
		for _, stmt := range []string{
			`UPDATE audit SET result = 'forged'`,
			`UPDATE audit SET actor = 'nobody' WHERE id = ` + fmt.Sprint(id(3)),
			`DELETE FROM audit`,
			`DELETE FROM audit WHERE id = ` + fmt.Sprint(id(1)),
		} {
			_, err := db.ExecContext(ctx, stmt)
			if err == nil || !strings.Contains(err.Error(), "the audit log is append-only") {
				t.Errorf("%s: error = %v, want the append-only trigger to refuse it", stmt, err)
			}
		}
		got, err := s.ListAudit(ctx, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 5 || !reflect.DeepEqual(got[4], entries[0]) || !reflect.DeepEqual(got[2], entries[2]) {
			t.Errorf("audit log changed: %+v", got)
		}
	})
}

// A '%' in the path is a file name character, not a URI escape.
func TestOpenPathWithPercent(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a%41b.db")
	s, err := store.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database not at %s: %v", path, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "aAb.db")); err == nil {
		t.Errorf("path was percent-decoded into aAb.db")
	}
}
