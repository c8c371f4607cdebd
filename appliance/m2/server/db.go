package server

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// schema is the backend's metadata, in its own SQLite file. Rows are
// written in state 'creating' before their volume exists and become
// 'ready' after, so a crash leaves a row that start-up cleans, never a
// volume nobody knows.
const schema = `
CREATE TABLE IF NOT EXISTS images (
    name       TEXT    PRIMARY KEY,
    size       INTEGER NOT NULL DEFAULT 0,
    allocated  INTEGER NOT NULL DEFAULT 0,
    sha256     TEXT    NOT NULL DEFAULT '',
    state      TEXT    NOT NULL CHECK (state IN ('creating', 'ready')),
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS disks (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    project           TEXT    NOT NULL,
    name              TEXT    NOT NULL,
    source            TEXT    NOT NULL,
    node              TEXT    NOT NULL DEFAULT '',
    initiator         TEXT    NOT NULL DEFAULT '',
    boot_token_sha256 TEXT    NOT NULL DEFAULT '',
    state             TEXT    NOT NULL CHECK (state IN ('creating', 'ready')),
    created_at        INTEGER NOT NULL,
    UNIQUE (project, name)
);
CREATE UNIQUE INDEX IF NOT EXISTS disks_node ON disks (node) WHERE node != '';
CREATE UNIQUE INDEX IF NOT EXISTS disks_boot_token ON disks (boot_token_sha256) WHERE boot_token_sha256 != '';
CREATE TABLE IF NOT EXISTS snapshots (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    project    TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    disk       TEXT    NOT NULL,
    size       INTEGER NOT NULL DEFAULT 0,
    state      TEXT    NOT NULL CHECK (state IN ('creating', 'ready')),
    created_at INTEGER NOT NULL,
    UNIQUE (project, name)
);
CREATE TABLE IF NOT EXISTS project_tokens (
    project      TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE
);
`

func openDB(ctx context.Context, path string) (*sql.DB, error) {
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("database path %q contains '?' or '#'", path)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	f.Close()
	dsn := "file:" + strings.ReplaceAll(path, "%", "%25") +
		"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=synchronous(FULL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	// One connection: metadata writes are few, and this serialises them.
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("create schema: %w", err)
	}
	return db, nil
}

func isUnique(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) &&
		(se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY)
}
