package storage

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// reflinkEnv names a directory on a reflink-capable filesystem (XFS with
// reflink=1, btrfs) for the reflink tests and benchmarks.
const reflinkEnv = "MALLEABLE_REFLINK_DIR"

// reflinkWorks reports whether dir's filesystem clones with FICLONE.
func reflinkWorks(t testing.TB, dir string) bool {
	t.Helper()
	a, err := os.CreateTemp(dir, "probe")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(a.Name())
	defer a.Close()
	if _, err := a.WriteString("probe"); err != nil {
		t.Fatal(err)
	}
	b, err := os.CreateTemp(dir, "probe")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(b.Name())
	defer b.Close()
	return unix.IoctlFileClone(int(b.Fd()), int(a.Fd())) == nil
}

// reflinkDir returns a fresh directory on a filesystem with reflink
// support: $MALLEABLE_REFLINK_DIR, else the test's temp dir if it has it,
// else, as root with mkfs.xfs installed (apt-get install xfsprogs), an
// XFS (reflink=1) image of fsSize bytes (sparse) loop-mounted for this
// test. It skips the test, saying why, when none of these works.
func reflinkDir(t testing.TB, fsSize int64) string {
	t.Helper()
	if d := os.Getenv(reflinkEnv); d != "" {
		dir, err := os.MkdirTemp(d, "reflink-test")
		if err != nil {
			t.Fatalf("%s: %v", reflinkEnv, err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if !reflinkWorks(t, dir) {
			t.Fatalf("%s=%s has no reflink support", reflinkEnv, d)
		}
		return dir
	}
	if dir := t.TempDir(); reflinkWorks(t, dir) {
		return dir
	}
	if os.Geteuid() != 0 {
		t.Skipf("no reflink: the temp dir's filesystem has none, not root to mount one, %s unset", reflinkEnv)
	}
	mkfs, err := exec.LookPath("mkfs.xfs")
	if err != nil {
		t.Skipf("no reflink: the temp dir's filesystem has none, mkfs.xfs not installed, %s unset", reflinkEnv)
	}
	work := t.TempDir()
	img, mnt := filepath.Join(work, "xfs.img"), filepath.Join(work, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, fsSize); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-m", "reflink=1", img).CombinedOutput(); err != nil {
		t.Skipf("no reflink: mkfs.xfs: %v: %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("no reflink: cannot loop-mount an XFS image here: %v: %s", err, out)
	}
	// Registered after t.TempDir's cleanup, so it runs before it.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	if !reflinkWorks(t, mnt) {
		t.Skip("no reflink: the XFS image does not clone")
	}
	return mnt
}

// sharedExtents counts the extents of path that filefrag (e2fsprogs,
// FIEMAP) reports as shared with another file, and all its extents; ok is
// false when filefrag is not installed.
func sharedExtents(t testing.TB, path string) (shared, total int, ok bool) {
	t.Helper()
	bin, err := exec.LookPath("filefrag")
	if err != nil {
		t.Log("filefrag not installed: block sharing not checked")
		return 0, 0, false
	}
	out, err := exec.Command(bin, "-v", path).CombinedOutput()
	if err != nil {
		t.Fatalf("filefrag: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		// Extent lines look like "   0:   0..  255:   24..  279:  256:   last,shared,eof".
		fields := strings.Fields(line)
		if len(fields) < 2 || !strings.HasSuffix(fields[0], ":") || !strings.Contains(line, "..") {
			continue
		}
		total++
		if strings.Contains(line, "shared") {
			shared++
		}
	}
	return shared, total, true
}

// TestCloneReflink runs on a reflink-capable filesystem: Clone and
// ImportFile share blocks instead of copying, and ForceCopy still makes a
// real sparse copy there.
func TestCloneReflink(t *testing.T) {
	ctx := context.Background()
	dir := reflinkDir(t, 512*mib)
	extents := []extent{{0, mib}, {40 * mib, 3 * mib}}
	golden := filepath.Join(dir, "golden.img")
	want := writeImage(t, golden, 64*mib, extents)

	for name, tt := range map[string]struct {
		opts       FileOptions
		wantMethod string
	}{
		"reflink":    {opts: FileOptions{}, wantMethod: MethodReflink},
		"force copy": {opts: FileOptions{ForceCopy: true}, wantMethod: MethodSparseCopy},
	} {
		t.Run(name, func(t *testing.T) {
			f, root := newTestFileIn(t, dir, tt.opts)
			t.Cleanup(func() { os.RemoveAll(root) })
			img, err := f.ImportFile(ctx, "images/golden", golden)
			if err != nil {
				t.Fatal(err)
			}
			v, err := f.Clone(ctx, "images/golden", "disks/web-1")
			if err != nil {
				t.Fatal(err)
			}
			for _, got := range []Volume{img, v} {
				if got.CloneMethod != tt.wantMethod || got.Size != 64*mib {
					t.Errorf("%s: %+v, want 64 MiB by %s", got.Name, got, tt.wantMethod)
				}
			}
			if got, err := f.Checksum(ctx, "disks/web-1"); err != nil || got != want {
				t.Errorf("Checksum = %s, %v; want %s", got, err, want)
			}
			if st, err := f.Stat(ctx, "disks/web-1"); err != nil || st.CloneMethod != tt.wantMethod {
				t.Errorf("Stat = %+v, %v; want method %s kept", st, err, tt.wantMethod)
			}
			p, err := f.Path("disks/web-1")
			if err != nil {
				t.Fatal(err)
			}
			if shared, total, ok := sharedExtents(t, p); ok {
				t.Logf("clone: %d of %d extents shared with another file", shared, total)
				if tt.wantMethod == MethodReflink && (total == 0 || shared != total) {
					t.Errorf("%d of %d extents shared, want all", shared, total)
				}
				if tt.wantMethod != MethodReflink && shared != 0 {
					t.Errorf("%d of %d extents shared, want none", shared, total)
				}
			}
			t.Logf("clone: %d bytes apparent, %d allocated, %d in data blocks", v.Size, v.Allocated, blocksOf(extents))
			if data := blocksOf(extents); v.Allocated > data+64<<10 {
				t.Errorf("clone allocates %d bytes, want about %d", v.Allocated, data)
			}
		})
	}
}
