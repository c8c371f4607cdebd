package server

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/malleable-cloud/malleable/appliance/m2"
	"github.com/malleable-cloud/malleable/appliance/storage"
)

func (b *Backend) ms() int64 { return b.now().UnixMilli() }

// storageErr maps storage errors to the API's sentinels.
func storageErr(err error) error {
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return fmt.Errorf("%w: %w", m2.ErrNotFound, err)
	case errors.Is(err, storage.ErrExists):
		return fmt.Errorf("%w: %w", m2.ErrExists, err)
	case errors.Is(err, storage.ErrInvalidName):
		return fmt.Errorf("%w: %w", m2.ErrInvalid, err)
	}
	return err
}

// ImportImage adds golden image name from src (size bytes, or to EOF when
// negative), or from a file on the server when path is not empty.
func (b *Backend) ImportImage(ctx context.Context, name string, src io.Reader, size int64, path string) (m2.Image, error) {
	if err := m2.ValidateName("image", name); err != nil {
		return m2.Image{}, err
	}
	if src != nil && size >= 0 {
		if err := validImageSize(size); err != nil {
			return m2.Image{}, err
		}
	}
	_, err := b.db.ExecContext(ctx, `INSERT INTO images (name, state, created_at) VALUES (?, 'creating', ?)`, name, b.ms())
	if isUnique(err) {
		return m2.Image{}, fmt.Errorf("image %q: %w", name, m2.ErrExists)
	}
	if err != nil {
		return m2.Image{}, err
	}
	img, err := b.importImage(ctx, name, src, size, path)
	if err != nil {
		b.cfg.Storage.Remove(context.WithoutCancel(ctx), "images/"+name)
		b.db.ExecContext(context.WithoutCancel(ctx), `DELETE FROM images WHERE name = ?`, name)
		return m2.Image{}, fmt.Errorf("import image %s: %w", name, err)
	}
	return img, nil
}

func (b *Backend) importImage(ctx context.Context, name string, src io.Reader, size int64, path string) (m2.Image, error) {
	vol := "images/" + name
	var err error
	if path != "" {
		_, err = b.cfg.Storage.ImportFile(ctx, vol, path)
	} else {
		_, err = b.cfg.Storage.Import(ctx, vol, src, size)
	}
	if err != nil {
		return m2.Image{}, storageErr(err)
	}
	sum, err := b.cfg.Storage.Checksum(ctx, vol)
	if err != nil {
		return m2.Image{}, err
	}
	v, err := b.cfg.Storage.Stat(ctx, vol)
	if err != nil {
		return m2.Image{}, err
	}
	if err := validImageSize(v.Size); err != nil {
		return m2.Image{}, err
	}
	if _, err := b.db.ExecContext(ctx, `UPDATE images SET size = ?, allocated = ?, sha256 = ?, state = 'ready' WHERE name = ?`,
		v.Size, v.Allocated, sum, name); err != nil {
		return m2.Image{}, err
	}
	return b.Image(ctx, name)
}

// sectorSize is the unit of an iSCSI LUN's size.
const sectorSize = 512

// validImageSize refuses what cannot be a disk: a golden image is at
// least one 512-byte sector and a whole number of them, which is what a
// LUN presents: its size is counted in whole sectors.
func validImageSize(size int64) error {
	if size < sectorSize || size%sectorSize != 0 {
		return fmt.Errorf("%w: image is %d bytes; a golden image is a disk: at least one and a whole number of 512-byte sectors", m2.ErrInvalid, size)
	}
	return nil
}

// Image returns golden image name.
func (b *Backend) Image(ctx context.Context, name string) (m2.Image, error) {
	var img m2.Image
	var created int64
	err := b.db.QueryRowContext(ctx, `SELECT name, size, allocated, sha256, created_at FROM images WHERE name = ? AND state = 'ready'`, name).
		Scan(&img.Name, &img.Size, &img.Allocated, &img.SHA256, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return img, fmt.Errorf("image %q: %w", name, m2.ErrNotFound)
	}
	img.CreatedAt = time.UnixMilli(created).UTC()
	return img, err
}

// Images lists the golden images by name.
func (b *Backend) Images(ctx context.Context) ([]m2.Image, error) {
	rows, err := b.db.QueryContext(ctx, `SELECT name, size, allocated, sha256, created_at FROM images WHERE state = 'ready' ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []m2.Image{}
	for rows.Next() {
		var img m2.Image
		var created int64
		if err := rows.Scan(&img.Name, &img.Size, &img.Allocated, &img.SHA256, &created); err != nil {
			return nil, err
		}
		img.CreatedAt = time.UnixMilli(created).UTC()
		out = append(out, img)
	}
	return out, rows.Err()
}

// RemoveImage removes a golden image. Disks cloned from it are full copies
// and stay.
func (b *Backend) RemoveImage(ctx context.Context, name string) error {
	if err := m2.ValidateName("image", name); err != nil {
		return err
	}
	res, err := b.db.ExecContext(ctx, `DELETE FROM images WHERE name = ? AND state = 'ready'`, name)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("image %q: %w", name, m2.ErrNotFound)
	}
	return b.cfg.Storage.Remove(ctx, "images/"+name)
}

// CreateDisk clones an image ("image:<name>", or just "<name>") or one of
// the project's snapshots ("snapshot:<name>") into disk name of project,
// and presents it as an iSCSI target that nobody may log in to until it is
// attached to a node. Of concurrent requests for one name exactly one wins.
func (b *Backend) CreateDisk(ctx context.Context, project, name, source string) (m2.Disk, error) {
	if err := errors.Join(m2.ValidateProject(project), m2.ValidateDiskName("disk", name)); err != nil {
		return m2.Disk{}, err
	}
	kind, src, ok := strings.Cut(source, ":")
	if !ok {
		kind, src = "image", source
	}
	var srcVol string
	switch kind {
	case "image":
		if err := m2.ValidateName("image", src); err != nil {
			return m2.Disk{}, err
		}
		if _, err := b.Image(ctx, src); err != nil {
			return m2.Disk{}, err
		}
		srcVol = "images/" + src
	case "snapshot":
		if err := m2.ValidateDiskName("snapshot", src); err != nil {
			return m2.Disk{}, err
		}
		var id int64
		err := b.db.QueryRowContext(ctx, `SELECT id FROM snapshots WHERE project = ? AND name = ? AND state = 'ready'`, project, src).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return m2.Disk{}, fmt.Errorf("snapshot %q of project %s: %w", src, project, m2.ErrNotFound)
		}
		if err != nil {
			return m2.Disk{}, err
		}
		srcVol = "snapshots/s" + strconv.FormatInt(id, 10)
	default:
		return m2.Disk{}, fmt.Errorf("%w: source %q must be image:<name> or snapshot:<name>", m2.ErrInvalid, source)
	}
	source = kind + ":" + src
	res, err := b.db.ExecContext(ctx, `INSERT INTO disks (project, name, source, state, created_at) VALUES (?, ?, ?, 'creating', ?)`,
		project, name, source, b.ms())
	if isUnique(err) {
		return m2.Disk{}, fmt.Errorf("disk %q of project %s: %w", name, project, m2.ErrExists)
	}
	if err != nil {
		return m2.Disk{}, err
	}
	id, _ := res.LastInsertId()
	d := diskRow{id: id, project: project, name: name, source: source, created: b.ms()}
	out, err := b.createDisk(ctx, d, srcVol)
	if err != nil {
		bg := context.WithoutCancel(ctx)
		b.cfg.Targets.Remove(bg, b.iqn(project, name))
		b.cfg.Storage.Remove(bg, b.volume(d))
		b.cfg.Secrets.Delete(bg, b.secretPath(d))
		b.db.ExecContext(bg, `DELETE FROM disks WHERE id = ?`, id)
		return m2.Disk{}, fmt.Errorf("create disk %s/%s: %w", project, name, err)
	}
	b.log.Info("disk created", "project", project, "disk", name, "source", source)
	return out, nil
}

func (b *Backend) createDisk(ctx context.Context, d diskRow, srcVol string) (m2.Disk, error) {
	if _, err := b.cfg.Storage.Clone(ctx, srcVol, b.volume(d)); err != nil {
		return m2.Disk{}, storageErr(err)
	}
	if err := b.cfg.Secrets.Put(ctx, b.secretPath(d), []byte(newSecret())); err != nil {
		return m2.Disk{}, err
	}
	t, err := b.spec(ctx, d)
	if err != nil {
		return m2.Disk{}, err
	}
	if err := b.cfg.Targets.Apply(ctx, t); err != nil {
		return m2.Disk{}, fmt.Errorf("present iSCSI target: %w", err)
	}
	if _, err := b.db.ExecContext(ctx, `UPDATE disks SET state = 'ready' WHERE id = ?`, d.id); err != nil {
		return m2.Disk{}, err
	}
	return b.disk(ctx, d)
}

// Disk returns disk name of project.
func (b *Backend) Disk(ctx context.Context, project, name string) (m2.Disk, error) {
	d, err := b.getDisk(ctx, project, name)
	if err != nil {
		return m2.Disk{}, err
	}
	return b.disk(ctx, d)
}

// Disks lists project's disks by name.
func (b *Backend) Disks(ctx context.Context, project string) ([]m2.Disk, error) {
	rows, err := b.db.QueryContext(ctx, `SELECT `+diskCols+` FROM disks WHERE project = ? AND state = 'ready' ORDER BY name`, project)
	if err != nil {
		return nil, err
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
	out := []m2.Disk{}
	for _, d := range ds {
		disk, err := b.disk(ctx, d)
		if err != nil {
			return nil, err
		}
		out = append(out, disk)
	}
	return out, nil
}

// DeleteDisk removes a disk that is not attached: target, volume, secret.
func (b *Backend) DeleteDisk(ctx context.Context, project, name string) error {
	d, err := b.getDisk(ctx, project, name)
	if err != nil {
		return err
	}
	if d.node != "" {
		return fmt.Errorf("disk %s/%s is attached to node %s; detach it first: %w", project, name, d.node, m2.ErrInUse)
	}
	if err := b.cfg.Targets.Remove(ctx, b.iqn(project, name)); err != nil {
		return fmt.Errorf("delete disk %s/%s: remove target: %w", project, name, err)
	}
	if err := b.cfg.Storage.Remove(ctx, b.volume(d)); err != nil {
		return err
	}
	if err := b.cfg.Secrets.Delete(ctx, b.secretPath(d)); err != nil {
		return err
	}
	_, err = b.db.ExecContext(ctx, `DELETE FROM disks WHERE id = ?`, d.id)
	return err
}

// Attach attaches a disk to a node: the target's ACL admits only the
// node's initiator, its CHAP secret is rotated, and a new boot token is
// issued (the previous one stops working). A node holds at most one disk
// and a disk is on at most one node.
func (b *Backend) Attach(ctx context.Context, project, name, node string) (m2.Attachment, error) {
	if err := m2.ValidateProject(node); err != nil {
		return m2.Attachment{}, fmt.Errorf("%w: node %q must be a DNS label", m2.ErrInvalid, node)
	}
	d, err := b.getDisk(ctx, project, name)
	if err != nil {
		return m2.Attachment{}, err
	}
	raw := make([]byte, 32)
	rand.Read(raw)
	token := hex.EncodeToString(raw)
	d.node, d.initiator, d.bootTokenHash = node, b.InitiatorIQN(node), tokenHash(token)
	// Check and update in one statement: of concurrent attaches of one
	// disk to different nodes exactly one finds it free.
	res, err := b.db.ExecContext(ctx, `UPDATE disks SET node = ?, initiator = ?, boot_token_sha256 = ?
		WHERE id = ? AND state = 'ready' AND node IN ('', ?)`,
		d.node, d.initiator, d.bootTokenHash, d.id, node)
	if isUnique(err) {
		return m2.Attachment{}, fmt.Errorf("node %s already has a disk attached: %w", node, m2.ErrInUse)
	}
	if err != nil {
		return m2.Attachment{}, err
	}
	if n, err := res.RowsAffected(); err != nil {
		return m2.Attachment{}, err
	} else if n == 0 {
		now, err := b.getDisk(ctx, project, name)
		if err != nil {
			return m2.Attachment{}, err
		}
		return m2.Attachment{}, fmt.Errorf("disk %s/%s is attached to node %s: %w", project, name, now.node, m2.ErrInUse)
	}
	if err := b.rotate(ctx, d); err != nil {
		return m2.Attachment{}, fmt.Errorf("attach %s/%s to %s: %w", project, name, node, err)
	}
	b.log.Info("disk attached", "project", project, "disk", name, "node", node)
	return m2.Attachment{Disk: name, Node: node, Initiator: d.initiator, BootToken: token}, nil
}

// rotate gives a disk a new CHAP secret and applies its target.
func (b *Backend) rotate(ctx context.Context, d diskRow) error {
	if err := b.cfg.Secrets.Put(ctx, b.secretPath(d), []byte(newSecret())); err != nil {
		return err
	}
	t, err := b.spec(ctx, d)
	if err != nil {
		return err
	}
	return b.cfg.Targets.Apply(ctx, t)
}

// Detach detaches a disk from its node: nobody may log in any more, the
// CHAP secret rotates and the boot token dies. Detaching a detached disk
// succeeds.
func (b *Backend) Detach(ctx context.Context, project, name string) error {
	d, err := b.getDisk(ctx, project, name)
	if err != nil {
		return err
	}
	return b.detach(ctx, d)
}

func (b *Backend) detach(ctx context.Context, d diskRow) error {
	d.node, d.initiator, d.bootTokenHash = "", "", ""
	if _, err := b.db.ExecContext(ctx, `UPDATE disks SET node = '', initiator = '', boot_token_sha256 = '' WHERE id = ?`, d.id); err != nil {
		return err
	}
	// tgtd keeps sessions already logged in when the ACL and secret change:
	// drop the target, so the node is cut off now; rotate re-creates it.
	if err := b.cfg.Targets.Remove(ctx, b.iqn(d.project, d.name)); err != nil {
		return fmt.Errorf("detach %s/%s: drop sessions: %w", d.project, d.name, err)
	}
	if err := b.rotate(ctx, d); err != nil {
		return fmt.Errorf("detach %s/%s: %w", d.project, d.name, err)
	}
	b.log.Info("disk detached", "project", d.project, "disk", d.name)
	return nil
}

// DetachNode detaches whatever disk of project is attached to node: the
// handover's unbind step. Nothing attached is success.
func (b *Backend) DetachNode(ctx context.Context, node, project string) error {
	d, err := scanDisk(b.db.QueryRowContext(ctx, `SELECT `+diskCols+` FROM disks WHERE node = ? AND state = 'ready'`, node))
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	if project != "" && d.project != project {
		return fmt.Errorf("node %s holds disk %s/%s, not one of %s: %w", node, d.project, d.name, project, m2.ErrInUse)
	}
	return b.detach(ctx, d)
}

// BootScript returns the iPXE script of the disk a boot token was issued
// for, with the project and node it belongs to, so the caller can check
// the node is still leased to the project.
func (b *Backend) BootScript(ctx context.Context, token string) (script []byte, project, node string, err error) {
	if len(token) != 64 {
		return nil, "", "", fmt.Errorf("boot token: %w", m2.ErrNotFound)
	}
	d, err := scanDisk(b.db.QueryRowContext(ctx, `SELECT `+diskCols+` FROM disks WHERE boot_token_sha256 = ? AND state = 'ready'`, tokenHash(token)))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, "", "", fmt.Errorf("boot token: %w", m2.ErrNotFound)
	}
	if err != nil {
		return nil, "", "", err
	}
	s, err := b.bootScript(ctx, d)
	return s, d.project, d.node, err
}

// DiskBootScript returns the boot script of project's disk, for its owner.
func (b *Backend) DiskBootScript(ctx context.Context, project, name string) ([]byte, error) {
	d, err := b.getDisk(ctx, project, name)
	if err != nil {
		return nil, err
	}
	return b.bootScript(ctx, d)
}

// CreateSnapshot copies a disk of project into snapshot snap (power the
// node off first for a consistent copy).
func (b *Backend) CreateSnapshot(ctx context.Context, project, disk, snap string) (m2.Snapshot, error) {
	if err := m2.ValidateDiskName("snapshot", snap); err != nil {
		return m2.Snapshot{}, err
	}
	d, err := b.getDisk(ctx, project, disk)
	if err != nil {
		return m2.Snapshot{}, err
	}
	res, err := b.db.ExecContext(ctx, `INSERT INTO snapshots (project, name, disk, state, created_at) VALUES (?, ?, ?, 'creating', ?)`,
		project, snap, disk, b.ms())
	if isUnique(err) {
		return m2.Snapshot{}, fmt.Errorf("snapshot %q of project %s: %w", snap, project, m2.ErrExists)
	}
	if err != nil {
		return m2.Snapshot{}, err
	}
	id, _ := res.LastInsertId()
	vol := "snapshots/s" + strconv.FormatInt(id, 10)
	v, err := b.cfg.Storage.Clone(ctx, b.volume(d), vol)
	if err == nil {
		_, err = b.db.ExecContext(ctx, `UPDATE snapshots SET size = ?, state = 'ready' WHERE id = ?`, v.Size, id)
	}
	if err != nil {
		bg := context.WithoutCancel(ctx)
		b.cfg.Storage.Remove(bg, vol)
		b.db.ExecContext(bg, `DELETE FROM snapshots WHERE id = ?`, id)
		return m2.Snapshot{}, fmt.Errorf("snapshot %s/%s: %w", project, disk, storageErr(err))
	}
	return b.snapshot(ctx, project, snap)
}

func (b *Backend) snapshot(ctx context.Context, project, name string) (m2.Snapshot, error) {
	var s m2.Snapshot
	var created int64
	err := b.db.QueryRowContext(ctx, `SELECT project, name, disk, size, created_at FROM snapshots WHERE project = ? AND name = ? AND state = 'ready'`,
		project, name).Scan(&s.Project, &s.Name, &s.Disk, &s.Size, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return s, fmt.Errorf("snapshot %q of project %s: %w", name, project, m2.ErrNotFound)
	}
	s.CreatedAt = time.UnixMilli(created).UTC()
	return s, err
}

// Snapshots lists project's snapshots by name.
func (b *Backend) Snapshots(ctx context.Context, project string) ([]m2.Snapshot, error) {
	rows, err := b.db.QueryContext(ctx, `SELECT project, name, disk, size, created_at FROM snapshots WHERE project = ? AND state = 'ready' ORDER BY name`, project)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []m2.Snapshot{}
	for rows.Next() {
		var s m2.Snapshot
		var created int64
		if err := rows.Scan(&s.Project, &s.Name, &s.Disk, &s.Size, &created); err != nil {
			return nil, err
		}
		s.CreatedAt = time.UnixMilli(created).UTC()
		out = append(out, s)
	}
	return out, rows.Err()
}

// RemoveSnapshot removes one of project's snapshots; disks made from it
// are full copies and stay.
func (b *Backend) RemoveSnapshot(ctx context.Context, project, name string) error {
	var id int64
	err := b.db.QueryRowContext(ctx, `SELECT id FROM snapshots WHERE project = ? AND name = ? AND state = 'ready'`, project, name).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("snapshot %q of project %s: %w", name, project, m2.ErrNotFound)
	}
	if err != nil {
		return err
	}
	if _, err := b.db.ExecContext(ctx, `DELETE FROM snapshots WHERE id = ?`, id); err != nil {
		return err
	}
	return b.cfg.Storage.Remove(ctx, "snapshots/s"+strconv.FormatInt(id, 10))
}
