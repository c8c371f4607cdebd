package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
)

// newTestFile opens a File on a fresh root in a temporary directory and
// returns it with the root's path.
func newTestFile(t testing.TB, opts FileOptions) (*File, string) {
	t.Helper()
	return newTestFileIn(t, t.TempDir(), opts)
}

func newTestFileIn(t testing.TB, parent string, opts FileOptions) (*File, string) {
	t.Helper()
	root := filepath.Join(parent, "volumes")
	f, err := NewFile(root, opts)
	if err != nil {
		t.Fatalf("NewFile: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return f, root
}

// extent is a run of data in a test image.
type extent struct{ off, len int64 }

// writeImage creates a sparse file of size bytes at path with pseudo-random
// data in the given extents (zeros, as holes, elsewhere) and returns the
// SHA-256 of its content.
func writeImage(t testing.TB, path string, size int64, extents []extent) string {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.NewChaCha8([32]byte{1})
	for _, e := range extents {
		buf := make([]byte, e.len)
		rng.Read(buf)
		if _, err := f.WriteAt(buf, e.off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return fileSum(t, path)
}

func fileSum(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// tree lists every path under dir, with a trailing "/" for directories and
// " -> target" for symlinks, so tests can show that nothing changed.
func tree(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			rel += " -> " + target
		case d.IsDir():
			rel += "/"
		}
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// tempEntries returns what is left in the root's temp directory.
func tempEntries(t testing.TB, root string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(root, tempDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// cancelAfter is a context whose Err starts reporting context.Canceled
// after n calls. It makes "cancelled in the middle of a copy" happen at a
// chosen point with no timing involved; the driver checks Err between
// chunks.
type cancelAfter struct {
	context.Context
	n     atomic.Int64
	calls atomic.Int64
}

func newCancelAfter(n int64) *cancelAfter {
	c := &cancelAfter{Context: context.Background()}
	c.n.Store(n)
	return c
}

func (c *cancelAfter) Err() error {
	c.calls.Add(1)
	if c.n.Add(-1) < 0 {
		return context.Canceled
	}
	return nil
}

// cancellingReader returns the bytes of r and calls cancel once it has
// delivered after bytes: a real context cancelled in the middle of an
// import.
type cancellingReader struct {
	r      io.Reader
	after  int64
	read   int64
	cancel context.CancelFunc
}

func (c *cancellingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.read += int64(n)
	if c.read >= c.after {
		c.cancel()
	}
	return n, err
}

// randomBytes returns n deterministic pseudo-random bytes.
func randomBytes(seed byte, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}
