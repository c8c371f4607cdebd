package secrets

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

var _ Store = (*FileStore)(nil)

// Errors of FileStore beyond the contract; match them with errors.Is.
var (
	// ErrCorrupt means the data file is damaged, was modified, or is in a
	// format this binary does not read.
	ErrCorrupt = errors.New("secrets data file corrupt or tampered")
	// ErrBadKey means the key file is missing, malformed, or not the key
	// the data file was written with.
	ErrBadKey = errors.New("secrets key missing, malformed or wrong")
	// ErrInsecure means a file is accessible to group or others, or the
	// directory is writable by them.
	ErrInsecure = errors.New("secrets file permissions too open")
	// ErrLocked means another FileStore (in this or another process) has
	// the file open.
	ErrLocked = errors.New("secrets file in use by another process")
	// ErrClosed means the FileStore was closed.
	ErrClosed = errors.New("secrets store closed")
)

// tempInfix marks the temporary files of atomic writes; OpenFile removes
// leftovers of a crash.
const tempInfix = ".tmp-"

// FileStore is the embedded Store: all secrets in one file encrypted with
// AES-256-GCM under a random 32-byte key kept in a separate file. Every
// change rewrites the file atomically before it returns. It is safe for
// concurrent use; an advisory lock keeps a second FileStore, in this or any
// other process, from opening the same file.
type FileStore struct {
	path   string
	sealer *sealer
	lock   *os.File // held open for the advisory lock

	mu     sync.RWMutex
	data   map[string][]byte // what the data file holds; values never mutated
	closed bool
}

// OpenFile opens the store kept in the data file path and the key file
// path+".key", creating both (and the directory, mode 0700) when neither
// exists. It refuses, with a clear error and never an empty store, a data
// file without its key (ErrBadKey) or a key without its data file, a wrong
// key (ErrBadKey), a damaged or modified data file (ErrCorrupt), a file that
// group or others can access or a directory they can write (ErrInsecure),
// and a store already open elsewhere (ErrLocked). Close releases it.
func OpenFile(path string) (*FileStore, error) {
	s, err := openFile(path)
	if err != nil {
		return nil, fmt.Errorf("open secrets %s: %w", path, err)
	}
	return s, nil
}

func openFile(path string) (*FileStore, error) {
	if path == "" || strings.HasSuffix(path, string(filepath.Separator)) {
		return nil, errors.New("the data file path must name a file")
	}
	dir, base := filepath.Dir(path), filepath.Base(path)
	if err := ensureDir(dir); err != nil {
		return nil, err
	}
	lock, err := lockFile(path + ".lock")
	if err != nil {
		return nil, err
	}
	s, err := load(path)
	if err != nil {
		lock.Close()
		return nil, err
	}
	s.lock = lock
	removeTemps(dir, base)
	return s, nil
}

// load reads the key and data files, or creates both when neither exists.
// The caller holds the lock.
func load(path string) (*FileStore, error) {
	keyPath := path + ".key"
	keyInfo, keyErr := os.Lstat(keyPath)
	dataInfo, dataErr := os.Lstat(path)
	if dataErr == nil {
		if err := checkFile(path, dataInfo); err != nil {
			return nil, err
		}
	}
	if keyErr == nil {
		if err := checkFile(keyPath, keyInfo); err != nil {
			return nil, err
		}
	}
	keyMissing, dataMissing := errors.Is(keyErr, fs.ErrNotExist), errors.Is(dataErr, fs.ErrNotExist)
	switch {
	case keyMissing && dataMissing:
		return create(path, keyPath)
	case keyMissing:
		return nil, fmt.Errorf("%w: key file %s is missing but the data file exists; restore the key, a new one cannot read the data",
			ErrBadKey, keyPath)
	case dataMissing:
		return nil, fmt.Errorf("data file is missing but key file %s exists; restore the data file, or remove the key file to start empty: %w",
			keyPath, dataErr)
	case keyErr != nil:
		return nil, keyErr
	case dataErr != nil:
		return nil, dataErr
	}
	key, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	sl, err := newSealer(key)
	clear(key)
	if err != nil {
		return nil, err
	}
	file, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read data: %w", err)
	}
	data, err := sl.open(file)
	if err != nil {
		return nil, err
	}
	return &FileStore{path: path, sealer: sl, data: data}, nil
}

// create writes a new key and then an empty data file. A crash between the
// two leaves a key without data, which load refuses rather than guess; a
// failed data write removes the new key again.
func create(path, keyPath string) (*FileStore, error) {
	key := make([]byte, keySize)
	rand.Read(key) // never fails (crypto/rand)
	defer clear(key)
	sl, err := newSealer(key)
	if err != nil {
		return nil, err
	}
	if _, err := writeAtomic(keyPath, key); err != nil {
		return nil, fmt.Errorf("create key: %w", err)
	}
	s := &FileStore{path: path, sealer: sl}
	if err := s.commit(make(map[string][]byte)); err != nil {
		if s.data == nil { // nothing was ever encrypted under the new key
			_ = os.Remove(keyPath)
		}
		return nil, fmt.Errorf("create data file: %w", err)
	}
	return s, nil
}

// ensureDir creates dir with mode 0700 if it does not exist, and refuses an
// existing one that group or others can write: they could swap the files.
func ensureDir(dir string) error {
	info, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		return os.Chmod(dir, 0o700) // whatever the umask
	}
	if err != nil {
		return err
	}
	if !info.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if perm := info.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("%w: directory %s has mode %#o, writable by group or others (want 0700)", ErrInsecure, dir, perm)
	}
	return nil
}

// checkFile refuses anything but a regular file (not a symlink) that only
// its owner can access.
func checkFile(path string, info fs.FileInfo) error {
	if !info.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file (mode %s)", path, info.Mode())
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %#o, accessible to group or others (want 0600)", ErrInsecure, path, perm)
	}
	return nil
}

// removeTemps deletes leftovers of interrupted atomic writes of the data and
// key files. They never hold anything newer than an acknowledged write, so
// this is best effort.
func removeTemps(dir, base string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, base+tempInfix) || strings.HasPrefix(n, base+".key"+tempInfix) {
			_ = os.Remove(filepath.Join(dir, n))
		}
	}
}

// writeAtomic replaces path with data: a temporary file in the same
// directory is written, synced, and renamed over path, then the directory is
// synced. renamed reports whether the new contents became visible, which is
// possible even with an error (from the directory sync).
func writeAtomic(path string, data []byte) (renamed bool, err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+tempInfix+"*")
	if err != nil {
		return false, err
	}
	tmp := f.Name()
	defer func() {
		if !renamed {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return false, err
	}
	if _, err := f.Write(data); err != nil {
		return false, err
	}
	if err := f.Sync(); err != nil {
		return false, err
	}
	if err := f.Close(); err != nil {
		return false, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return false, err
	}
	return true, syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// commit writes next to the data file and, once it is visible there, makes
// it the in-memory state. The caller holds s.mu for writing.
func (s *FileStore) commit(next map[string][]byte) error {
	file, err := s.sealer.seal(next)
	if err != nil {
		return err
	}
	renamed, err := writeAtomic(s.path, file)
	if renamed {
		s.data = next
	}
	if err != nil {
		return fmt.Errorf("write data file: %w", err)
	}
	return nil
}

// Get returns a copy of the value at path, or ErrNotFound.
func (s *FileStore) Get(ctx context.Context, path string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("get secret %q: %w", path, err)
	}
	if err := ValidatePath(path); err != nil {
		return nil, fmt.Errorf("get secret %q: %w", path, err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, fmt.Errorf("get secret %q: %w", path, ErrClosed)
	}
	v, ok := s.data[path]
	if !ok {
		return nil, fmt.Errorf("get secret %q: %w", path, ErrNotFound)
	}
	return clone(v), nil
}

// Put creates or replaces the value at path; the data file is rewritten
// before it returns.
func (s *FileStore) Put(ctx context.Context, path string, value []byte) error {
	if err := s.update(ctx, path, func(m map[string][]byte) bool {
		m[path] = clone(value)
		return true
	}, value); err != nil {
		return fmt.Errorf("put secret %q: %w", path, err)
	}
	return nil
}

// Delete removes the value at path; an absent path is not an error and
// leaves the data file untouched.
func (s *FileStore) Delete(ctx context.Context, path string) error {
	if err := s.update(ctx, path, func(m map[string][]byte) bool {
		_, ok := m[path]
		delete(m, path)
		return ok
	}, nil); err != nil {
		return fmt.Errorf("delete secret %q: %w", path, err)
	}
	return nil
}

// update validates, applies change to a copy of the state and commits the
// copy if change reports a difference.
func (s *FileStore) update(ctx context.Context, path string, change func(map[string][]byte) bool, value []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkPut(path, value); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil { // it may have ended while waiting for the lock
		return err
	}
	next := maps.Clone(s.data)
	if !change(next) {
		return nil
	}
	return s.commit(next)
}

// List returns the sorted paths under prefix (see Store.List).
func (s *FileStore) List(ctx context.Context, prefix string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list secrets %q: %w", prefix, err)
	}
	dir, err := dirPrefix(prefix)
	if err != nil {
		return nil, fmt.Errorf("list secrets %q: %w", prefix, err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, fmt.Errorf("list secrets %q: %w", prefix, ErrClosed)
	}
	return listUnder(s.data, dir), nil
}

// Close releases the store and its lock; later calls fail with ErrClosed.
// Closing twice is not an error.
func (s *FileStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.data = nil
	if err := s.lock.Close(); err != nil {
		return fmt.Errorf("close secrets %s: %w", s.path, err)
	}
	return nil
}
