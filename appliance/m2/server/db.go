package server

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"os"
	"strings"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/malleable-cloud/malleable/appliance/migrate"
)

// openDB opens the backend's metadata database and brings its schema to
// the latest embedded migration (migrations/NNNN_name.sql).
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
	if err := applySchema(ctx, db); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

//go:embed migrations/*.sql
var migrationFS embed.FS

// schema is the metadata database's embedded migrations.
func schema() (migrate.Set, error) { return migrate.Load(migrationFS, "migrations", "metadata") }

// applySchema brings db to the latest embedded migration. Migrations only
// move forward; a database written by a newer binary is refused.
func applySchema(ctx context.Context, db *sql.DB) error {
	set, err := schema()
	if err != nil {
		return err
	}
	return set.Apply(ctx, db)
}

func isUnique(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) &&
		(se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY)
}
