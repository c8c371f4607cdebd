package server_test

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/m2"
	"github.com/malleable-cloud/malleable/appliance/m2/server"
)

// TestAttachConcurrent: of two concurrent attaches of one disk to two
// nodes exactly one wins and the other gets 409, round after round, and
// the disk, its target's ACL and the winner's boot token agree.
func TestAttachConcurrent(t *testing.T) {
	e := newEnv(t, "")
	e.importImage("golden", imageSize, "M2-ATTACH-RACE")
	e.createDisk("acme", "web", "golden")
	const rounds = 50
	deadline := time.Now().Add(3 * time.Minute)
	for round := range rounds {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d rounds in 3 minutes", round, rounds)
		}
		nodes := [2]string{"node-a", "node-b"}
		var statuses [2]int
		var bodies [2][]byte
		var errs [2]error
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Go(func() {
				<-start
				statuses[i], bodies[i], errs[i] = e.send(http.MethodPost, "/m2/v1/projects/acme/disks/web/attach", "project:acme",
					map[string]string{"node": nodes[i]})
			})
		}
		close(start)
		wg.Wait()
		if err := errors.Join(errs[:]...); err != nil {
			t.Fatal(err)
		}
		winner := -1
		for i, s := range statuses {
			switch s {
			case http.StatusOK:
				if winner >= 0 {
					t.Fatalf("round %d: both attaches succeeded: disk on %s and %s", round, nodes[0], nodes[1])
				}
				winner = i
			case http.StatusConflict:
				if !strings.Contains(string(bodies[i]), "is attached to node") {
					t.Errorf("round %d: 409 without the reason: %s", round, bodies[i])
				}
			default:
				t.Fatalf("round %d: attach to %s: status %d: %s", round, nodes[i], s, bodies[i])
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no attach succeeded: %d %s / %d %s", round, statuses[0], bodies[0], statuses[1], bodies[1])
		}
		var d m2.Disk
		e.must(http.StatusOK, http.MethodGet, "/m2/v1/projects/acme/disks/web", "project:acme", nil, &d)
		if d.Node != nodes[winner] {
			t.Fatalf("round %d: %s won, but the disk is on %q", round, nodes[winner], d.Node)
		}
		ts, err := e.tgtd.Driver().List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, tg := range ts {
			if tg.IQN == d.Target.IQN && (len(tg.Initiators) != 1 || tg.Initiators[0] != e.backend.InitiatorIQN(nodes[winner])) {
				t.Fatalf("round %d: %s won, but the target admits %q", round, nodes[winner], tg.Initiators)
			}
		}
		e.must(http.StatusNoContent, http.MethodPost, "/m2/v1/projects/acme/disks/web/detach", "project:acme", nil, nil)
	}
}

// oldSchema is the M2 metadata schema as released before migrations: no
// user_version, tables created by the backend at every start.
const oldSchema = `
CREATE TABLE images (name TEXT PRIMARY KEY, size INTEGER NOT NULL DEFAULT 0, allocated INTEGER NOT NULL DEFAULT 0,
    sha256 TEXT NOT NULL DEFAULT '', state TEXT NOT NULL CHECK (state IN ('creating', 'ready')), created_at INTEGER NOT NULL);
CREATE TABLE disks (id INTEGER PRIMARY KEY AUTOINCREMENT, project TEXT NOT NULL, name TEXT NOT NULL, source TEXT NOT NULL,
    node TEXT NOT NULL DEFAULT '', initiator TEXT NOT NULL DEFAULT '', boot_token_sha256 TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL CHECK (state IN ('creating', 'ready')), created_at INTEGER NOT NULL, UNIQUE (project, name));
CREATE UNIQUE INDEX disks_node ON disks (node) WHERE node != '';
CREATE UNIQUE INDEX disks_boot_token ON disks (boot_token_sha256) WHERE boot_token_sha256 != '';
CREATE TABLE snapshots (id INTEGER PRIMARY KEY AUTOINCREMENT, project TEXT NOT NULL, name TEXT NOT NULL, disk TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL CHECK (state IN ('creating', 'ready')), created_at INTEGER NOT NULL,
    UNIQUE (project, name));
CREATE TABLE project_tokens (project TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL UNIQUE);
`

// TestMigrations: a metadata database of the schema released before
// migrations upgrades in place, keeping its rows; a new one starts at the
// latest version; one written by a newer binary is refused.
func TestMigrations(t *testing.T) {
	e := newEnv(t, "")
	e.importImage("golden", imageSize, "M2-MIGRATE")
	e.close()
	// Rewrite the database as the old release left it: its schema, its
	// rows, no version.
	dbPath := filepath.Join(e.dir, "m2.db")
	db, err := sql.Open("sqlite", "file:"+dbPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, q := range []string{
		`CREATE TABLE images_keep AS SELECT * FROM images`,
		`DROP TABLE images`, `DROP TABLE disks`, `DROP TABLE snapshots`, `DROP TABLE project_tokens`,
		oldSchema,
		`INSERT INTO images SELECT * FROM images_keep`, `DROP TABLE images_keep`,
		`PRAGMA user_version = 0`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			db.Close()
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()

	e.open()
	var img m2.Image
	e.must(http.StatusOK, http.MethodGet, "/m2/v1/images/golden", "admin", nil, &img)
	e.createDisk("acme", "after-upgrade", "golden")
	e.close()
	latest, err := filepath.Glob("migrations/*.sql")
	if err != nil || len(latest) == 0 {
		t.Fatalf("migrations: %v %v", latest, err)
	}
	db, err = sql.Open("sqlite", "file:"+dbPath)
	if err != nil {
		t.Fatal(err)
	}
	var v int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil || v != len(latest) {
		t.Fatalf("schema version after upgrade = %d, %v; want %d", v, err, len(latest))
	}
	db.Close()

	// A database from a newer binary is refused, not half-understood.
	db, err = sql.Open("sqlite", "file:"+dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `PRAGMA user_version = 99`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = server.Open(ctx, server.Config{DB: dbPath, IQNPrefix: iqnPrefix, Portal: "127.0.0.1:3260",
		Storage: nil, Targets: nil, Secrets: e.secrets})
	if err == nil || !strings.Contains(err.Error(), "newer than this binary") {
		t.Fatalf("Open of a version-99 database = %v, want refused as newer", err)
	}
}
