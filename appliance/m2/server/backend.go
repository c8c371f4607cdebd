// Package server is Malleable's M2 storage backend: golden images, per-
// project disks cloned from them (create_disk), snapshots, and one iSCSI
// target per disk with its own CHAP account and an ACL admitting only the
// node the disk is attached to. Metadata lives in its own SQLite file;
// volumes in a storage driver; targets in tgtd, which is volatile, so the
// backend re-creates every target from its metadata when it starts.
package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"regexp"
	"strconv"
	"time"

	"github.com/malleable-cloud/malleable/appliance/iscsi"
	"github.com/malleable-cloud/malleable/appliance/m2"
	"github.com/malleable-cloud/malleable/appliance/storage"
	"github.com/malleable-cloud/malleable/templates"
)

// Targets is the iSCSI layer: tgtd through tgtadm; *iscsi.Driver
// implements it.
type Targets interface {
	Apply(ctx context.Context, t iscsi.Target) error
	Remove(ctx context.Context, iqn string) error
	Reconcile(ctx context.Context, want []iscsi.Target) error
}

// Secrets keeps CHAP secrets.
type Secrets interface {
	Get(ctx context.Context, path string) ([]byte, error)
	Put(ctx context.Context, path string, value []byte) error
	Delete(ctx context.Context, path string) error
}

// Config is what the backend needs.
type Config struct {
	// DB is the metadata database file.
	DB string
	// IQNPrefix names targets and initiators: iqn.<yyyy-mm>.<reversed-domain>.
	IQNPrefix string
	// Portal is the iSCSI portal (host:port) as nodes reach it; it goes
	// into boot scripts and target info.
	Portal  string
	Storage storage.Driver
	Targets Targets
	Secrets Secrets
	Logger  *slog.Logger
	Now     func() time.Time
}

// Backend is the M2 backend. It is safe for concurrent use.
type Backend struct {
	cfg Config
	db  *sql.DB
	log *slog.Logger
	now func() time.Time
}

var iqnPrefixRE = regexp.MustCompile(`^iqn\.[0-9]{4}-(0[1-9]|1[0-2])\.[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$`)

// ValidateIQNPrefix checks an iqn.<yyyy-mm>.<reversed-domain> prefix.
func ValidateIQNPrefix(p string) error {
	if len(p) > 100 || !iqnPrefixRE.MatchString(p) {
		return fmt.Errorf("%q is not iqn.<yyyy-mm>.<reversed domain>, such as iqn.2026-11.org.example", p)
	}
	return nil
}

// Open opens the backend: its metadata, then it cleans what a crash left
// half-made and re-creates every target in tgtd.
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	if err := ValidateIQNPrefix(cfg.IQNPrefix); err != nil {
		return nil, fmt.Errorf("m2: %w", err)
	}
	if _, _, err := net.SplitHostPort(cfg.Portal); err != nil {
		return nil, fmt.Errorf("m2: portal %q is not host:port", cfg.Portal)
	}
	db, err := openDB(ctx, cfg.DB)
	if err != nil {
		return nil, fmt.Errorf("m2: open %s: %w", cfg.DB, err)
	}
	b := &Backend{cfg: cfg, db: db, log: cfg.Logger, now: cfg.Now}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if b.now == nil {
		b.now = time.Now
	}
	if err := b.Recover(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return b, nil
}

// Close closes the metadata database.
func (b *Backend) Close() error { return b.db.Close() }

// Recover removes rows a crash left in 'creating' (with any volume they
// may have published) and makes tgtd hold exactly the known disks'
// targets. It runs at Open and whenever tgtd was restarted.
func (b *Backend) Recover(ctx context.Context) error {
	for _, q := range []struct{ table, vol string }{{"images", "images/"}, {"disks", "disks/d"}, {"snapshots", "snapshots/s"}} {
		col := "id"
		if q.table == "images" {
			col = "name"
		}
		rows, err := b.db.QueryContext(ctx, `SELECT `+col+` FROM `+q.table+` WHERE state = 'creating'`)
		if err != nil {
			return fmt.Errorf("m2: recover: %w", err)
		}
		var keys []string
		for rows.Next() {
			var k string
			if err := rows.Scan(&k); err != nil {
				rows.Close()
				return fmt.Errorf("m2: recover: %w", err)
			}
			keys = append(keys, k)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return fmt.Errorf("m2: recover: %w", err)
		}
		for _, k := range keys {
			if err := b.cfg.Storage.Remove(ctx, q.vol+k); err != nil {
				return fmt.Errorf("m2: recover: remove %s%s: %w", q.vol, k, err)
			}
			if _, err := b.db.ExecContext(ctx, `DELETE FROM `+q.table+` WHERE `+col+` = ?`, k); err != nil {
				return fmt.Errorf("m2: recover: %w", err)
			}
			b.log.Warn("removed a half-made volume left by a crash", "volume", q.vol+k)
		}
	}
	want, err := b.wantTargets(ctx)
	if err != nil {
		return err
	}
	if err := b.cfg.Targets.Reconcile(ctx, want); err != nil {
		return fmt.Errorf("m2: re-create targets: %w", err)
	}
	b.log.Info("m2 targets reconciled", "targets", len(want))
	return nil
}

// diskRow is a disk as stored.
type diskRow struct {
	id                             int64
	project, name, source          string
	node, initiator, bootTokenHash string
	created                        int64
}

const diskCols = `id, project, name, source, node, initiator, boot_token_sha256, created_at`

func scanDisk(row interface{ Scan(...any) error }) (diskRow, error) {
	var d diskRow
	err := row.Scan(&d.id, &d.project, &d.name, &d.source, &d.node, &d.initiator, &d.bootTokenHash, &d.created)
	return d, err
}

func (b *Backend) volume(d diskRow) string     { return "disks/d" + strconv.FormatInt(d.id, 10) }
func (b *Backend) chapUser(d diskRow) string   { return "m2-d" + strconv.FormatInt(d.id, 10) }
func (b *Backend) secretPath(d diskRow) string { return "m2/chap/d" + strconv.FormatInt(d.id, 10) }
func (b *Backend) iqn(project, disk string) string {
	return b.cfg.IQNPrefix + ":" + project + "." + disk
}

// InitiatorIQN is the iSCSI name a node logs in with.
func (b *Backend) InitiatorIQN(node string) string { return b.cfg.IQNPrefix + ":node." + node }

// spec is the target a disk should have in tgtd.
func (b *Backend) spec(ctx context.Context, d diskRow) (iscsi.Target, error) {
	path, err := b.cfg.Storage.Path(b.volume(d))
	if err != nil {
		return iscsi.Target{}, fmt.Errorf("disk %s/%s: %w", d.project, d.name, err)
	}
	secret, err := b.cfg.Secrets.Get(ctx, b.secretPath(d))
	if err != nil {
		return iscsi.Target{}, fmt.Errorf("disk %s/%s: CHAP secret: %w", d.project, d.name, err)
	}
	t := iscsi.Target{IQN: b.iqn(d.project, d.name), Backing: path, CHAPUser: b.chapUser(d), CHAPSecret: string(secret)}
	if d.initiator != "" {
		t.Initiators = []string{d.initiator}
	}
	return t, nil
}

func (b *Backend) wantTargets(ctx context.Context) ([]iscsi.Target, error) {
	rows, err := b.db.QueryContext(ctx, `SELECT `+diskCols+` FROM disks WHERE state = 'ready' ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("m2: list disks: %w", err)
	}
	var ds []diskRow
	for rows.Next() {
		d, err := scanDisk(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		ds = append(ds, d)
	}
	rows.Close()
	want := make([]iscsi.Target, 0, len(ds))
	for _, d := range ds {
		t, err := b.spec(ctx, d)
		if err != nil {
			return nil, err
		}
		want = append(want, t)
	}
	return want, nil
}

// newSecret returns a CHAP secret: 16 characters of [A-Za-z0-9], which
// every initiator accepts (iPXE, libiscsi, Linux, Windows want 12-16).
func newSecret() string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	out := make([]byte, 16)
	for i := range out {
		n, _ := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		out[i] = alphabet[n.Int64()]
	}
	return string(out)
}

func tokenHash(t string) string {
	s := sha256.Sum256([]byte(t))
	return hex.EncodeToString(s[:])
}

func (b *Backend) getDisk(ctx context.Context, project, name string) (diskRow, error) {
	d, err := scanDisk(b.db.QueryRowContext(ctx, `SELECT `+diskCols+` FROM disks WHERE project = ? AND name = ? AND state = 'ready'`, project, name))
	if errors.Is(err, sql.ErrNoRows) {
		return d, fmt.Errorf("disk %q of project %s: %w", name, project, m2.ErrNotFound)
	}
	return d, err
}

func (b *Backend) disk(ctx context.Context, d diskRow) (m2.Disk, error) {
	out := m2.Disk{Project: d.project, Name: d.name, Source: d.source, Node: d.node,
		CreatedAt: time.UnixMilli(d.created).UTC(),
		Target:    m2.Target{Portal: b.cfg.Portal, IQN: b.iqn(d.project, d.name), LUN: 1, CHAPUser: b.chapUser(d), Initiator: d.initiator}}
	v, err := b.cfg.Storage.Stat(ctx, b.volume(d))
	if err != nil {
		return out, err
	}
	out.Size, out.Allocated = v.Size, v.Allocated
	return out, nil
}

// bootScript renders the iPXE script of an attached disk.
func (b *Backend) bootScript(ctx context.Context, d diskRow) ([]byte, error) {
	if d.node == "" {
		return nil, fmt.Errorf("disk %s/%s is not attached: %w", d.project, d.name, m2.ErrInvalid)
	}
	secret, err := b.cfg.Secrets.Get(ctx, b.secretPath(d))
	if err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(b.cfg.Portal)
	p, _ := strconv.Atoi(port)
	var buf bytes.Buffer
	err = templates.RenderSANBoot(&buf, templates.SANBoot{InitiatorIQN: d.initiator, CHAPUser: b.chapUser(d),
		CHAPSecret: string(secret), Portal: host, Port: p, LUN: 1, TargetIQN: b.iqn(d.project, d.name)})
	return buf.Bytes(), err
}
