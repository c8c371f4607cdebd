// Package store keeps the appliance's state in SQLite: tenants, nodes,
// leases and the audit log. It uses the pure-Go modernc.org/sqlite driver so
// the binary stays static.
//
// Writes go through a single connection, so write transactions queue in Go
// rather than fighting over SQLite's lock; reads use a small pool of
// read-only connections and see committed data (WAL).
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite" // registers the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/migrate"
)

// Sentinel errors; match them with errors.Is.
var (
	// ErrNotFound means the named record does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists means a record with that name (or MAC) already exists.
	ErrExists = errors.New("already exists")
	// ErrInUse means the record still has scheduled or active leases.
	ErrInUse = errors.New("in use")
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Store is the appliance's SQLite database. It is safe for concurrent use.
type Store struct {
	w   *sql.DB // one connection: every write transaction
	r   *sql.DB // read-only pool
	hot hotStatements

	mu       sync.Mutex
	bmcRange netip.Prefix // where new tenant-facing BMC addresses come from
}

// hotStatements are the reads every broker request makes (a tenant's
// smart-proxy asks for power status often, and Foreman waits at most
// 3 s): prepared once instead of parsed per query.
type hotStatements struct {
	tenantByToken, nodeByName, nodeByAddress, nextLease, holder, handoverOpen *sql.Stmt
}

func (h hotStatements) close() error {
	var errs []error
	for _, st := range []*sql.Stmt{h.tenantByToken, h.nodeByName, h.nodeByAddress, h.nextLease, h.holder, h.handoverOpen} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(errs...)
}

func (s *Store) prepare(ctx context.Context) error {
	for _, p := range []struct {
		dst *(*sql.Stmt)
		q   string
	}{
		{&s.hot.tenantByToken, `SELECT name FROM tenants WHERE broker_token_sha256 = ?`},
		{&s.hot.nodeByName, nodeQuery + ` WHERE n.name = ?`},
		{&s.hot.nodeByAddress, nodeQuery + ` WHERE n.tenant_bmc_address = ?`},
		{&s.hot.handoverOpen, `SELECT count(*) FROM handovers h JOIN nodes n ON n.id = h.node_id
			WHERE n.name = ? AND h.status != 'done'`},
		{&s.hot.nextLease, leaseQuery + ` WHERE n.name = ? AND t.name = ? AND l.cancelled = 0 AND l.end_at > ? ORDER BY l.start_at LIMIT 1`},
		{&s.hot.holder, `SELECT t.name FROM node_holders h JOIN nodes n ON n.id = h.node_id
			LEFT JOIN tenants t ON t.id = h.tenant_id WHERE n.name = ?`},
	} {
		st, err := s.r.PrepareContext(ctx, p.q)
		if err != nil {
			return fmt.Errorf("prepare: %w", err)
		}
		*p.dst = st
	}
	return nil
}

// Open opens (creating if needed) the database at path and brings its schema
// up to date.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" || strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("open store: invalid database path %q", path)
	}
	dsn := func(extra ...string) string {
		q := url.Values{}
		q["_pragma"] = append([]string{
			"busy_timeout(10000)", "journal_mode(WAL)", "foreign_keys(1)", "synchronous(FULL)",
		}, extra...)
		q.Set("_txlock", "immediate")
		// SQLite reads "file:" names as URIs and percent-decodes them.
		return "file:" + strings.ReplaceAll(path, "%", "%25") + "?" + q.Encode()
	}
	// Create the file ourselves so it is private from the start; SQLite
	// gives its -wal and -shm files the database file's mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	f.Close()
	w, err := sql.Open("sqlite", dsn())
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxLifetime(0)
	s := &Store{w: w, bmcRange: inventory.DefaultTenantBMCRange}
	if err := s.migrate(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", dsn("query_only(1)"))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	r.SetMaxOpenConns(4)
	s.r = r
	if err := s.prepare(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error {
	return errors.Join(s.hot.close(), s.r.Close(), s.w.Close())
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.r.PingContext(ctx)
}

// schema is the store's embedded migrations.
func schema() (migrate.Set, error) { return migrate.Load(migrationFS, "migrations", "database") }

// SchemaVersion returns the schema version recorded in the database.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) { return migrate.Version(ctx, s.w) }

// migrate applies, in order and each in its own transaction, every embedded
// migration newer than the database's user_version. Migrations only move
// forward; a database written by a newer binary is refused.
func (s *Store) migrate(ctx context.Context) error {
	set, err := schema()
	if err != nil {
		return err
	}
	return set.Apply(ctx, s.w)
}

// write runs fn in a write transaction, committing if it returns nil.
func (s *Store) write(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func ms(t time.Time) int64     { return t.UnixMilli() }
func fromMS(v int64) time.Time { return time.UnixMilli(v).UTC() }

// isUnique reports whether err is a violated UNIQUE or PRIMARY KEY constraint.
func isUnique(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) &&
		(se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY)
}

func notFound(kind, name string) error { return fmt.Errorf("%s %q: %w", kind, name, ErrNotFound) }

// LatestSchemaVersion is the schema version this binary migrates to.
func LatestSchemaVersion() int {
	set, _ := schema()
	return set.Latest()
}

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(...any) error }

// collect runs a query on the read pool and scans every row with scan.
// what names the query in errors.
func collect[T any](ctx context.Context, s *Store, what string, scan func(scanner) (T, error), q string, args ...any) ([]T, error) {
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}
