package migrate

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	_ "modernc.org/sqlite"
)

func open(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestApplyMovesForwardOnly(t *testing.T) {
	ctx := context.Background()
	fsys := fstest.MapFS{
		"m/0001_a.sql": {Data: []byte("CREATE TABLE a (x INTEGER);")},
		"m/0002_b.sql": {Data: []byte("ALTER TABLE a ADD COLUMN y TEXT;")},
		"m/README.md":  {Data: []byte("not a migration")},
	}
	set, err := Load(fsys, "m", "test")
	if err != nil || set.Latest() != 2 {
		t.Fatalf("Load: %d, %v", set.Latest(), err)
	}
	db := open(t)
	for range 2 { // twice: the second run has nothing to do
		if err := set.Apply(ctx, db); err != nil {
			t.Fatal(err)
		}
	}
	if v, _ := Version(ctx, db); v != 2 {
		t.Fatalf("version %d, want 2", v)
	}
	if _, err := db.Exec("INSERT INTO a (x, y) VALUES (1, 'z')"); err != nil {
		t.Fatalf("schema not applied: %v", err)
	}
	if _, err := db.Exec("PRAGMA user_version = 9"); err != nil {
		t.Fatal(err)
	}
	if err := set.Apply(ctx, db); err == nil || !strings.Contains(err.Error(), "test schema version 9 is newer than this binary's 2") {
		t.Fatalf("newer database: %v", err)
	}
}

func TestLoadRefuses(t *testing.T) {
	for name, tc := range map[string]struct {
		fsys fstest.MapFS
		want string
	}{
		"a gap":      {fstest.MapFS{"m/0001_a.sql": {}, "m/0003_c.sql": {}}, "0003_c.sql: expected version 2"},
		"no number":  {fstest.MapFS{"m/first.sql": {}}, "must start with a number"},
		"not from 1": {fstest.MapFS{"m/0002_b.sql": {}}, "expected version 1"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Load(tc.fsys, "m", "test"); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load: %v, want %q", err, tc.want)
			}
		})
	}
}

func TestFailedMigrationChangesNothing(t *testing.T) {
	ctx := context.Background()
	set, err := Load(fstest.MapFS{
		"m/0001_a.sql":   {Data: []byte("CREATE TABLE a (x INTEGER);")},
		"m/0002_bad.sql": {Data: []byte("CREATE TABLE b (x INTEGER); NOT SQL;")},
	}, "m", "test")
	if err != nil {
		t.Fatal(err)
	}
	db := open(t)
	if err := set.Apply(ctx, db); err == nil || !strings.Contains(err.Error(), "apply migration 0002_bad.sql") {
		t.Fatalf("Apply: %v", err)
	}
	if v, _ := Version(ctx, db); v != 1 {
		t.Errorf("version %d after a failed second migration, want 1", v)
	}
	if _, err := db.Exec("INSERT INTO b VALUES (1)"); err == nil {
		t.Error("the failed migration's first statement was kept")
	}
}
