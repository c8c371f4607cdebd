package storage

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
)

var _ Driver = (*File)(nil)

// Entries of the root that are not volumes. They start with a dot, which
// no valid name does, so they never collide with one.
const (
	tempDir  = ".tmp"  // volumes being written; linked into place when complete
	lockName = ".lock" // flock(2) held while a File owns the root
	// methodXattr records Volume.CloneMethod on the volume's file.
	methodXattr = "user.malleable.clone_method"
)

// FileOptions configures a File.
type FileOptions struct {
	// Logger receives one line per created volume and warnings; nil
	// discards them.
	Logger *slog.Logger
	// ForceCopy disables reflink clones, so that Clone and ImportFile
	// always make a sparse copy (for tests and benchmarks of that path).
	ForceCopy bool
}

// File is the Driver on a local filesystem: each volume is a regular,
// usually sparse, file <root>/<name>. It is safe for concurrent use. One
// File owns a root at a time: a second one, in this or another process,
// fails with ErrLocked until the first is closed.
type File struct {
	dir       string   // absolute path of the root, for Path
	root      *os.Root // every file access goes through it
	lock      *os.File
	log       *slog.Logger
	forceCopy bool
}

// NewFile opens the volume store at root, creating the directory with
// mode 0700 if needed, takes ownership of it (ErrLocked if another File
// holds it) and removes the temporary files of writes a crash interrupted.
func NewFile(root string, opts FileOptions) (*File, error) {
	if root == "" {
		return nil, errors.New("new file storage: empty root")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("new file storage: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create storage root: %w", err)
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open storage root: %w", err)
	}
	f := &File{dir: dir, root: r, log: log, forceCopy: opts.ForceCopy}
	if err := f.open(); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (f *File) open() error {
	fi, err := f.root.Stat(".")
	if err != nil {
		return fmt.Errorf("stat storage root: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		// Tenant disks live here; say so, but leave an admin's choice alone.
		f.log.Warn("storage root is accessible to group or others", "root", f.dir, "mode", fi.Mode().Perm().String())
	}
	lock, err := f.root.OpenFile(lockName, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open storage lock: %w", err)
	}
	f.lock = lock
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("%w: %s", ErrLocked, f.dir)
		}
		return fmt.Errorf("lock storage root: %w", err)
	}
	if err := f.root.Mkdir(tempDir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create temp dir: %w", err)
	}
	return f.removeStaleTemps()
}

// removeStaleTemps deletes what interrupted writes left in the temp dir.
// Holding the lock means no write of ours is in flight.
func (f *File) removeStaleTemps() error {
	d, err := f.root.Open(tempDir)
	if err != nil {
		return fmt.Errorf("open temp dir: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("read temp dir: %w", err)
	}
	for _, n := range names {
		if err := f.root.Remove(tempDir + "/" + n); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove stale temp file: %w", err)
		}
	}
	if len(names) > 0 {
		f.log.Warn("removed temp files of interrupted writes", "root", f.dir, "count", len(names))
	}
	return nil
}

// Close releases the root; the File must not be used afterwards.
func (f *File) Close() error {
	var errs []error
	if f.lock != nil {
		errs = append(errs, f.lock.Close()) // releases the flock
	}
	errs = append(errs, f.root.Close())
	return errors.Join(errs...)
}

// Stat describes the volume name, or fails with ErrNotFound.
func (f *File) Stat(ctx context.Context, name string) (Volume, error) {
	if err := ctx.Err(); err != nil {
		return Volume{}, fmt.Errorf("stat %s: %w", name, err)
	}
	file, fi, err := f.openVolume(name)
	if err != nil {
		return Volume{}, fmt.Errorf("stat %s: %w", name, err)
	}
	defer file.Close()
	return describe(name, file, fi), nil
}

// Path returns the backing file of volume name for the iSCSI target, or
// ErrNotFound. The file is a regular file inside the root, never a symlink.
func (f *File) Path(name string) (string, error) {
	fi, err := f.lstat(name)
	if err != nil {
		return "", fmt.Errorf("path of %s: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("path of %s: %w: not a regular file", name, ErrNotFound)
	}
	return filepath.Join(f.dir, filepath.FromSlash(name)), nil
}

// Remove deletes volume name. A missing volume is not an error; neither is
// a namespace directory of that name, which is left alone. A stray symlink
// of that name is removed (unlink never follows it).
func (f *File) Remove(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	fi, err := f.lstat(name)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	if fi.IsDir() {
		return nil
	}
	if err := f.root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	f.log.Info("volume removed", "volume", name)
	return nil
}

// List describes every volume, sorted by name. Entries that are not
// volumes — symlinks, invalid names, the driver's own dot entries — are
// skipped.
func (f *File) List(ctx context.Context) ([]Volume, error) {
	top, err := f.readDir(".")
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	var names []string
	for _, e := range top {
		if checkSegment(e.Name(), e.Name()) != nil {
			continue
		}
		switch {
		case e.Type().IsRegular():
			names = append(names, e.Name())
		case e.IsDir():
			sub, err := f.readDir(e.Name())
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("list volumes: %w", err)
			}
			for _, s := range sub {
				if s.Type().IsRegular() && checkSegment(s.Name(), s.Name()) == nil {
					names = append(names, e.Name()+"/"+s.Name())
				}
			}
		}
	}
	slices.Sort(names)
	vols := make([]Volume, 0, len(names))
	for _, n := range names {
		v, err := f.Stat(ctx, n)
		if errors.Is(err, ErrNotFound) {
			continue // removed while we listed
		}
		if err != nil {
			return nil, fmt.Errorf("list volumes: %w", err)
		}
		vols = append(vols, v)
	}
	return vols, nil
}

func (f *File) readDir(name string) ([]fs.DirEntry, error) {
	d, err := f.root.Open(name)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.ReadDir(-1)
}

// lstat validates name and returns the Lstat of its entry. A missing entry
// or namespace is ErrNotFound, and so is a namespace that is not a real
// directory: a symlink in the root is never followed.
func (f *File) lstat(name string) (fs.FileInfo, error) {
	ns, _, err := splitName(name)
	if err != nil {
		return nil, err
	}
	if ns != "" {
		fi, err := f.root.Lstat(ns)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, ErrNotFound
		}
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("%w: namespace %q is not a directory", ErrNotFound, ns)
		}
	}
	fi, err := f.root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	return fi, err
}

// openVolume opens volume name for reading. It must be a regular file, and
// the file opened must be the one checked, so a symlink swapped in between
// is refused rather than followed.
func (f *File) openVolume(name string) (*os.File, fs.FileInfo, error) {
	fi, err := f.lstat(name)
	if err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%w: not a regular file", ErrNotFound)
	}
	// os.Root would follow a symlink inside the root; SameFile below
	// refuses one that replaced the file since the Lstat.
	file, err := f.root.Open(name)
	if err != nil {
		return nil, nil, err
	}
	ofi, err := file.Stat()
	if err != nil {
		file.Close()
		return nil, nil, err
	}
	if !os.SameFile(fi, ofi) {
		file.Close()
		return nil, nil, fmt.Errorf("%w: replaced while opening", ErrNotFound)
	}
	return file, ofi, nil
}

// describe builds the Volume of an open volume file.
func describe(name string, file *os.File, fi fs.FileInfo) Volume {
	v := Volume{Name: name, Size: fi.Size()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		v.Allocated = st.Blocks * 512
	}
	buf := make([]byte, 32)
	if n, err := unix.Fgetxattr(int(file.Fd()), methodXattr, buf); err == nil {
		v.CloneMethod = string(buf[:n])
	}
	return v
}

// create makes volume name atomically: fill writes the content into a new
// temp file, which is then synced and hard-linked to its name, so the
// volume appears complete or not at all and of concurrent creators exactly
// one wins. The temp file is removed in every case.
func (f *File) create(ctx context.Context, name string, fill func(tmp *os.File) (method string, err error)) (Volume, error) {
	ns, _, err := splitName(name)
	if err != nil {
		return Volume{}, err
	}
	if err := ctx.Err(); err != nil {
		return Volume{}, err
	}
	if _, err := f.root.Lstat(name); err == nil {
		return Volume{}, ErrExists // fail fast; the link below decides
	}
	tmpName := tempDir + "/" + rand.Text()
	tmp, err := f.root.OpenFile(tmpName, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return Volume{}, fmt.Errorf("create temp file: %w", err)
	}
	defer func() {
		tmp.Close()
		if err := f.root.Remove(tmpName); err != nil && !errors.Is(err, fs.ErrNotExist) {
			f.log.Warn("remove temp file", "file", tmpName, "error", err)
		}
	}()
	method, err := fill(tmp)
	if err != nil {
		return Volume{}, err
	}
	if err := unix.Fsetxattr(int(tmp.Fd()), methodXattr, []byte(method), 0); err != nil &&
		!errors.Is(err, unix.ENOTSUP) {
		return Volume{}, fmt.Errorf("record clone method: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return Volume{}, fmt.Errorf("sync: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return Volume{}, err
	}
	if err := f.publish(tmpName, name, ns); err != nil {
		return Volume{}, err
	}
	// Described from a fresh open of the published, durable volume, as
	// Stat does: an fstat of the descriptor that wrote it may answer from
	// attributes cached before the writes (fuse-overlayfs reports 0 blocks
	// allocated there).
	file, fi, err := f.openVolume(name)
	if err != nil {
		return Volume{}, fmt.Errorf("stat %s: %w", name, err)
	}
	v := describe(name, file, fi)
	file.Close()
	f.log.Info("volume created", "volume", name, "method", method, "size", v.Size, "allocated", v.Allocated)
	return v, nil
}

// publish links the finished temp file to its name and makes the new
// directory entry durable. link(2) never replaces, so a taken name is
// ErrExists.
func (f *File) publish(tmpName, name, ns string) error {
	dir := "."
	if ns != "" {
		if err := f.ensureNamespace(ns); err != nil {
			return err
		}
		dir = ns
	}
	if err := f.root.Link(tmpName, name); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return ErrExists
		}
		return fmt.Errorf("publish: %w", err)
	}
	d, err := f.root.Open(dir)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("publish: sync directory: %w", err)
	}
	return nil
}

// ensureNamespace makes sure ns is a real directory in the root.
func (f *File) ensureNamespace(ns string) error {
	for range 2 { // a second pass only after losing a race to create it
		fi, err := f.root.Lstat(ns)
		if err == nil {
			if fi.IsDir() {
				return nil
			}
			return fmt.Errorf("%w: namespace %q is taken by a non-directory", ErrExists, ns)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("namespace %s: %w", ns, err)
		}
		if err := f.root.Mkdir(ns, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create namespace %s: %w", ns, err)
		}
	}
	return nil
}
