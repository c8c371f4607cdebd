// Package migrate applies embedded, forward-only SQL migrations to a
// SQLite database, recording the schema version in PRAGMA user_version.
// The appliance's store and the M2 backend's metadata database both use it.
package migrate

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
)

// Set is an ordered list of migrations, numbered 1, 2, ... without gaps.
type Set struct {
	what string // what the database is, for errors: "database", "metadata"
	ms   []migration
}

type migration struct {
	version int
	name    string
	sql     string
}

// Load reads the migrations in dir of fsys, named NNNN_name.sql. what
// names the database in errors.
func Load(fsys fs.FS, dir, what string) (Set, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return Set{}, err
	}
	set := Set{what: what}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return Set{}, fmt.Errorf("migration %s: name must start with a number and '_'", e.Name())
		}
		body, err := fs.ReadFile(fsys, dir+"/"+e.Name())
		if err != nil {
			return Set{}, err
		}
		set.ms = append(set.ms, migration{v, e.Name(), string(body)})
	}
	slices.SortFunc(set.ms, func(a, b migration) int { return a.version - b.version })
	for i, m := range set.ms {
		if m.version != i+1 {
			return Set{}, fmt.Errorf("migration %s: expected version %d", m.name, i+1)
		}
	}
	return set, nil
}

// Latest is the schema version the set migrates to.
func (s Set) Latest() int { return len(s.ms) }

// Version returns the schema version recorded in db.
func Version(ctx context.Context, db *sql.DB) (int, error) {
	var v int
	err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v)
	return v, err
}

// Apply runs, in order and each in its own transaction, every migration
// newer than db's user_version. A database written by a newer binary is
// refused.
func (s Set) Apply(ctx context.Context, db *sql.DB) error {
	current, err := Version(ctx, db)
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if current > len(s.ms) {
		return fmt.Errorf("%s schema version %d is newer than this binary's %d: upgrade malleable", s.what, current, len(s.ms))
	}
	for _, m := range s.ms[current:] {
		if err := apply(ctx, db, m); err != nil {
			return fmt.Errorf("apply migration %s: %w", m.name, err)
		}
	}
	return nil
}

func apply(ctx context.Context, db *sql.DB, m migration) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", m.version)); err != nil {
		return err
	}
	return tx.Commit()
}
