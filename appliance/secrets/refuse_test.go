package secrets_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/malleable-cloud/malleable/appliance/secrets"
)

// TestFileStoreTamper flips bits in every byte, truncates at every length
// and appends a byte: each must be refused, never panic, never give an empty
// store.
func TestFileStoreTamper(t *testing.T) {
	path := seeded(t)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	write := func(b []byte) {
		t.Helper()
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	refused := func(what string, wantErr ...error) {
		t.Helper()
		s, err := secrets.OpenFile(path)
		if err == nil {
			s.Close()
			t.Fatalf("%s: opened", what)
		}
		if !slices.ContainsFunc(wantErr, func(e error) bool { return errors.Is(err, e) }) {
			t.Fatalf("%s: error %v, want one of %v", what, err, wantErr)
		}
		for _, v := range []string{"calvin", "hunter2"} {
			if strings.Contains(err.Error(), v) {
				t.Fatalf("%s: error quotes a secret: %v", what, err)
			}
		}
	}
	for i := range orig {
		for _, mask := range []byte{0x01, 0x80} {
			b := bytes.Clone(orig)
			b[i] ^= mask
			write(b)
			refused("flip byte "+strconv.Itoa(i), secrets.ErrCorrupt, secrets.ErrBadKey)
		}
	}
	for n := range len(orig) {
		write(orig[:n])
		refused("truncate to "+strconv.Itoa(n), secrets.ErrCorrupt)
	}
	write(append(bytes.Clone(orig), 0))
	refused("append a byte", secrets.ErrCorrupt)

	// Each part of the header gives its own message.
	tests := map[string]struct {
		offset    int
		errSubstr string
		sentinel  error
	}{
		"magic":      {0, "bad magic", secrets.ErrCorrupt},
		"version":    {9, "format version 0, this binary reads version 1", secrets.ErrCorrupt},
		"key id":     {10, "does not belong to this data file", secrets.ErrBadKey},
		"nonce":      {18, "authentication failed", secrets.ErrCorrupt},
		"ciphertext": {30, "authentication failed", secrets.ErrCorrupt},
		"tag":        {len(orig) - 1, "authentication failed", secrets.ErrCorrupt},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			b := bytes.Clone(orig)
			b[tc.offset] ^= 0x01
			write(b)
			_, err := secrets.OpenFile(path)
			checkErr(t, err, tc.sentinel, tc.errSubstr)
		})
	}

	write(orig)
	s := mustOpen(t, path)
	mustGet(t, s, "tenants/acme/foreman-admin", "hunter2")
}

func TestFileStoreKeyProblems(t *testing.T) {
	other := seeded(t)
	otherKey, _ := os.ReadFile(other + ".key")
	tests := map[string]struct {
		setup     func(t *testing.T, path string)
		sentinel  error
		errSubstr string
	}{
		"another store's key": {func(t *testing.T, path string) {
			writeFile(t, path+".key", otherKey, 0o600)
		}, secrets.ErrBadKey, "does not belong to this data file"},
		"short key": {func(t *testing.T, path string) {
			writeFile(t, path+".key", otherKey[:31], 0o600)
		}, secrets.ErrBadKey, "holds 31 bytes, want 32"},
		"key missing": {func(t *testing.T, path string) {
			remove(t, path+".key")
		}, secrets.ErrBadKey, "is missing but the data file exists"},
		"data missing": {func(t *testing.T, path string) {
			remove(t, path)
		}, fs.ErrNotExist, "data file is missing"},
		"empty key file": {func(t *testing.T, path string) {
			writeFile(t, path+".key", nil, 0o600)
		}, secrets.ErrBadKey, "holds 0 bytes"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			path := seeded(t)
			tc.setup(t, path)
			before := snapshot(t, filepath.Dir(path))
			_, err := secrets.OpenFile(path)
			checkErr(t, err, tc.sentinel, tc.errSubstr)
			// A refused open must not "repair" anything, least of all
			// by making a new key or an empty data file.
			if after := snapshot(t, filepath.Dir(path)); !maps.Equal(before, after) {
				t.Errorf("files changed by a refused open:\nbefore %q\nafter  %q", before, after)
			}
		})
	}
}

func TestFileStorePermissions(t *testing.T) {
	tests := map[string]struct {
		file      string // "" is the directory; otherwise a suffix of the data path
		mode      fs.FileMode
		errSubstr string
	}{
		"key 0644":          {".key", 0o644, "accessible to group or others"},
		"key 0640":          {".key", 0o640, "mode 0640"},
		"key 0604":          {".key", 0o604, "mode 0604"},
		"key 0660":          {".key", 0o660, "mode 0660"},
		"data 0644":         {"data", 0o644, "mode 0644"},
		"data 0606":         {"data", 0o606, "mode 0606"},
		"directory 0777":    {"", 0o777, "writable by group or others"},
		"directory 0770":    {"", 0o770, "mode 0770"},
		"directory 0702":    {"", 0o702, "mode 0702"},
		"key read-only":     {".key", 0o400, ""},
		"data read-only":    {"data", 0o400, ""},
		"directory 0755 ok": {"", 0o755, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			path := seeded(t)
			target := filepath.Dir(path)
			switch tc.file {
			case "data":
				target = path
			case ".key":
				target = path + ".key"
			}
			if err := os.Chmod(target, tc.mode); err != nil {
				t.Fatal(err)
			}
			s, err := secrets.OpenFile(path)
			if tc.errSubstr == "" {
				checkErr(t, err, nil, "")
				mustGet(t, s, "bmc/node-1", "calvin")
				s.Close()
				return
			}
			checkErr(t, err, secrets.ErrInsecure, tc.errSubstr)
		})
	}
}

func TestOpenFileNotRegular(t *testing.T) {
	tests := map[string]struct {
		setup     func(t *testing.T, path string)
		errSubstr string
	}{
		"data is a symlink": {func(t *testing.T, path string) {
			if err := os.Rename(path, path+".real"); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(path+".real", path); err != nil {
				t.Fatal(err)
			}
		}, "is not a regular file"},
		"key is a directory": {func(t *testing.T, path string) {
			remove(t, path+".key")
			if err := os.Mkdir(path+".key", 0o700); err != nil {
				t.Fatal(err)
			}
		}, "is not a regular file"},
		"path is a directory": {func(t *testing.T, path string) {
			remove(t, path)
			remove(t, path+".key")
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
		}, "is not a regular file"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			path := seeded(t)
			tc.setup(t, path)
			_, err := secrets.OpenFile(path)
			checkErr(t, err, nil, tc.errSubstr)
		})
	}
	_, err := secrets.OpenFile(filepath.Join(seeded(t), "inner.db"))
	checkErr(t, err, nil, "is not a directory")
	_, err = secrets.OpenFile("")
	checkErr(t, err, nil, "must name a file")
}

// snapshot maps each file name in dir to its mode and contents.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string)
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		out[e.Name()] = info.Mode().String() + " " + hex.EncodeToString(b)
	}
	return out
}
