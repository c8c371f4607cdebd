package storage

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestNewFile(t *testing.T) {
	parent := t.TempDir()
	root := filepath.Join(parent, "a", "volumes")
	f, err := NewFile(root, FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(root)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o700 {
		t.Errorf("root mode = %v, want 0700", got)
	}

	if _, err := NewFile(root, FileOptions{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second NewFile on one root = %v, want ErrLocked", err)
	}

	// A crash mid-write leaves a temp file; the next owner removes it.
	if err := os.WriteFile(filepath.Join(root, tempDir, "leftover"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	f2, err := NewFile(root, FileOptions{})
	if err != nil {
		t.Fatalf("NewFile after Close: %v", err)
	}
	defer f2.Close()
	if left := tempEntries(t, root); len(left) != 0 {
		t.Errorf("temp dir after reopen = %v, want empty", left)
	}

	if _, err := NewFile("", FileOptions{}); err == nil {
		t.Error("NewFile(\"\") succeeded")
	}
	file := filepath.Join(parent, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewFile(file, FileOptions{}); err == nil {
		t.Error("NewFile on a regular file succeeded")
	}
}

func TestStatRemoveList(t *testing.T) {
	ctx := context.Background()
	f, root := newTestFile(t, FileOptions{})

	if _, err := f.Stat(ctx, "disks/none"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat missing = %v, want ErrNotFound", err)
	}
	if _, err := f.Path("disks/none"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Path missing = %v, want ErrNotFound", err)
	}
	if _, err := f.Checksum(ctx, "none"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Checksum missing = %v, want ErrNotFound", err)
	}

	data := []byte("hello volume\n")
	for _, n := range []string{"snapshots/s1", "images/golden", "disks/b", "disks/a", "scratch"} {
		if _, err := f.Import(ctx, n, bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatalf("Import %s: %v", n, err)
		}
	}
	// Not volumes: a symlink, an invalid name, a nested directory.
	if err := os.Symlink("a", filepath.Join(root, "disks", "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "disks", "UPPER"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "disks", "nested"), 0o700); err != nil {
		t.Fatal(err)
	}

	vols, err := f.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range vols {
		names = append(names, v.Name)
		if v.Size != int64(len(data)) || v.CloneMethod != MethodImport {
			t.Errorf("List: %+v, want size %d, method %q", v, len(data), MethodImport)
		}
	}
	want := []string{"disks/a", "disks/b", "images/golden", "scratch", "snapshots/s1"}
	if !slices.Equal(names, want) {
		t.Errorf("List names = %q, want %q", names, want)
	}

	p, err := f.Path("disks/a")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, data) {
		t.Errorf("Path file holds %q, %v", got, err)
	}
	if !strings.HasPrefix(p, root+string(filepath.Separator)) {
		t.Errorf("Path = %s, not under %s", p, root)
	}

	for range 2 { // idempotent
		if err := f.Remove(ctx, "disks/a"); err != nil {
			t.Fatalf("Remove: %v", err)
		}
	}
	if _, err := f.Stat(ctx, "disks/a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat after Remove = %v, want ErrNotFound", err)
	}
	if err := f.Remove(ctx, "nonamespace/x"); err != nil {
		t.Errorf("Remove in a missing namespace = %v", err)
	}
	// A namespace is not a volume: Remove leaves the directory alone.
	if err := f.Remove(ctx, "disks"); err != nil {
		t.Errorf("Remove of a namespace = %v", err)
	}
	if _, err := f.Stat(ctx, "disks/b"); err != nil {
		t.Errorf("disks/b after Remove(\"disks\"): %v", err)
	}
	if _, err := f.Stat(ctx, "disks"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat of a namespace = %v, want ErrNotFound", err)
	}

	// A volume and a namespace cannot share a name.
	if _, err := f.Import(ctx, "disks", bytes.NewReader(data), -1); !errors.Is(err, ErrExists) {
		t.Errorf("Import over a namespace = %v, want ErrExists", err)
	}
	if _, err := f.Import(ctx, "scratch/x", bytes.NewReader(data), -1); !errors.Is(err, ErrExists) {
		t.Errorf("Import below a volume = %v, want ErrExists", err)
	}
	if left := tempEntries(t, root); len(left) != 0 {
		t.Errorf("temp dir = %v, want empty", left)
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := f.Remove(cancelled, "disks/b"); !errors.Is(err, context.Canceled) {
		t.Errorf("Remove with a cancelled context = %v", err)
	}
	if _, err := f.Stat(ctx, "disks/b"); err != nil {
		t.Errorf("disks/b after a cancelled Remove: %v", err)
	}
}

// TestBadNames calls every method with each invalid name: each fails with
// ErrInvalidName and nothing in or around the root changes.
func TestBadNames(t *testing.T) {
	ctx := context.Background()
	parent := t.TempDir()
	f, _ := newTestFileIn(t, parent, FileOptions{})
	data := []byte("golden")
	if _, err := f.Import(ctx, "images/golden", bytes.NewReader(data), -1); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(parent, "src.img")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	before := tree(t, parent)

	bad := []string{
		"../x", "../volumes/images/golden", "images/../../src.img", "/abs", "/tmp/x",
		"a//b", "Upper", "images/Golden", strings.Repeat("x", 64), "disks/" + strings.Repeat("x", 64),
		"disks/caf\u00e9", "", "a/b/c", ".tmp/x", ".lock", "images/", "/", ".", "..",
	}
	calls := map[string]func(name string) error{
		"Import": func(n string) error {
			_, err := f.Import(ctx, n, bytes.NewReader(data), -1)
			return err
		},
		"ImportFile": func(n string) error { _, err := f.ImportFile(ctx, n, src); return err },
		"Clone dst":  func(n string) error { _, err := f.Clone(ctx, "images/golden", n); return err },
		"Clone src":  func(n string) error { _, err := f.Clone(ctx, n, "disks/new"); return err },
		"Remove":     func(n string) error { return f.Remove(ctx, n) },
		"Stat":       func(n string) error { _, err := f.Stat(ctx, n); return err },
		"Checksum":   func(n string) error { _, err := f.Checksum(ctx, n); return err },
		"Path":       func(n string) error { _, err := f.Path(n); return err },
	}
	for method, call := range calls {
		for _, n := range bad {
			if err := call(n); !errors.Is(err, ErrInvalidName) {
				t.Errorf("%s(%q) = %v, want ErrInvalidName", method, n, err)
			}
		}
	}
	if after := tree(t, parent); !slices.Equal(before, after) {
		t.Errorf("files changed:\nbefore %q\nafter  %q", before, after)
	}
}

// TestSymlinks plants symlinks in the root, pointing out of it and inside
// it: no method follows one, reads through one, writes through one or
// hands one to the iSCSI target.
func TestSymlinks(t *testing.T) {
	ctx := context.Background()
	parent := t.TempDir()
	f, root := newTestFileIn(t, parent, FileOptions{})
	outside := filepath.Join(parent, "outside")
	if err := os.Mkdir(outside, 0o700); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Import(ctx, "images/golden", strings.NewReader("golden"), -1); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Import(ctx, "disks/real", strings.NewReader("real"), -1); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{
		"disks/abs":    secret,                        // absolute, out of the root
		"disks/rel":    "../../outside/secret",        // relative, out of the root
		"disks/inner":  "../images/golden",            // inside the root
		"escape":       outside,                       // a namespace leading out
		"alias":        "images",                      // a namespace leading inside
		"disks/dangle": filepath.Join(outside, "new"), // dangling, out of the root
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, filepath.FromSlash(name))); err != nil {
			t.Fatal(err)
		}
	}
	before := tree(t, outside)
	reads := []string{"disks/abs", "disks/rel", "disks/inner", "escape/secret", "alias/golden", "disks/dangle"}
	for _, n := range reads {
		if _, err := f.Stat(ctx, n); !errors.Is(err, ErrNotFound) {
			t.Errorf("Stat(%s) = %v, want ErrNotFound", n, err)
		}
		if p, err := f.Path(n); !errors.Is(err, ErrNotFound) {
			t.Errorf("Path(%s) = %q, %v, want ErrNotFound", n, p, err)
		}
		if _, err := f.Checksum(ctx, n); !errors.Is(err, ErrNotFound) {
			t.Errorf("Checksum(%s) = %v, want ErrNotFound", n, err)
		}
		if _, err := f.Clone(ctx, n, "disks/copy"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Clone(%s) = %v, want ErrNotFound", n, err)
		}
	}
	// Writes to a symlinked name never land at its target.
	for _, n := range []string{"disks/abs", "disks/dangle", "escape/new", "alias/new"} {
		if _, err := f.Clone(ctx, "images/golden", n); !errors.Is(err, ErrExists) {
			t.Errorf("Clone to %s = %v, want ErrExists", n, err)
		}
		if _, err := f.Import(ctx, n, strings.NewReader("evil"), -1); !errors.Is(err, ErrExists) {
			t.Errorf("Import to %s = %v, want ErrExists", n, err)
		}
	}
	if err := f.Remove(ctx, "escape/secret"); err != nil {
		t.Errorf("Remove(escape/secret) = %v", err)
	}
	if err := f.Remove(ctx, "alias/golden"); err != nil {
		t.Errorf("Remove(alias/golden) = %v", err)
	}
	if _, err := f.Stat(ctx, "images/golden"); err != nil {
		t.Errorf("images/golden after Remove through a namespace link: %v", err)
	}
	// Removing a stray link removes the link, never its target.
	if err := f.Remove(ctx, "disks/abs"); err != nil {
		t.Errorf("Remove(disks/abs) = %v", err)
	}
	if _, err := os.Lstat(filepath.Join(root, "disks", "abs")); !os.IsNotExist(err) {
		t.Errorf("link disks/abs still there: %v", err)
	}
	if after := tree(t, outside); !slices.Equal(before, after) {
		t.Errorf("outside changed:\nbefore %q\nafter  %q", before, after)
	}
	if got, err := os.ReadFile(secret); err != nil || string(got) != "s3cret" {
		t.Errorf("secret = %q, %v", got, err)
	}
	vols, err := f.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range vols {
		names = append(names, v.Name)
	}
	if want := []string{"disks/real", "images/golden"}; !slices.Equal(names, want) {
		t.Errorf("List = %q, want %q", names, want)
	}
	if left := tempEntries(t, root); len(left) != 0 {
		t.Errorf("temp dir = %v, want empty", left)
	}
}
