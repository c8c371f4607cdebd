package secrets_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/malleable-cloud/malleable/appliance/secrets"
)

// openTemp opens a new FileStore in a fresh directory, closed at cleanup.
func openTemp(t *testing.T) *secrets.FileStore {
	t.Helper()
	return mustOpen(t, filepath.Join(t.TempDir(), "secrets.db"))
}

// mustOpen opens the FileStore at path, closed at cleanup.
func mustOpen(t *testing.T, path string) *secrets.FileStore {
	t.Helper()
	s, err := secrets.OpenFile(path)
	if err != nil {
		t.Fatalf("OpenFile: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustClose(t *testing.T, s *secrets.FileStore) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func mustPut(t *testing.T, s *secrets.FileStore, path, value string) {
	t.Helper()
	if err := s.Put(t.Context(), path, []byte(value)); err != nil {
		t.Fatalf("Put(%q): %v", path, err)
	}
}

func mustGet(t *testing.T, s *secrets.FileStore, path, want string) {
	t.Helper()
	got, err := s.Get(t.Context(), path)
	if err != nil {
		t.Fatalf("Get(%q): %v", path, err)
	}
	if string(got) != want {
		t.Errorf("Get(%q) = %q, want %q", path, got, want)
	}
}

// seeded returns the data file path of a closed store holding a few secrets.
func seeded(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secrets.db")
	s := mustOpen(t, path)
	mustPut(t, s, "bmc/node-1", "calvin")
	mustPut(t, s, "tenants/acme/foreman-admin", "hunter2")
	mustClose(t, s)
	return path
}

func perm(t *testing.T, path string) fs.FileMode {
	t.Helper()
	info, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.Mode().Perm()
}

func TestFileStoreRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secrets.db")
	s := mustOpen(t, path)
	mustPut(t, s, "bmc/node-1", "calvin")
	mustPut(t, s, "bmc/node-2", "\x00\xff binary")
	mustPut(t, s, "tenants/acme/foreman-admin", "first")
	mustPut(t, s, "tenants/acme/foreman-admin", "second")
	mustPut(t, s, "gone", "soon")
	if err := s.Delete(t.Context(), "gone"); err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)

	s = mustOpen(t, path)
	mustGet(t, s, "bmc/node-1", "calvin")
	mustGet(t, s, "bmc/node-2", "\x00\xff binary")
	mustGet(t, s, "tenants/acme/foreman-admin", "second")
	if _, err := s.Get(t.Context(), "gone"); !errors.Is(err, secrets.ErrNotFound) {
		t.Errorf("deleted secret after restart: %v, want ErrNotFound", err)
	}
	got, err := s.List(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"bmc/node-1", "bmc/node-2", "tenants/acme/foreman-admin"}; !slices.Equal(got, want) {
		t.Errorf("List after restart = %q, want %q", got, want)
	}
}

func TestFileStoreModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "secrets") // created by OpenFile
	path := filepath.Join(dir, "secrets.db")
	s := mustOpen(t, path)
	mustPut(t, s, "bmc/node-1", "calvin")
	for p, want := range map[string]fs.FileMode{dir: 0o700, path: 0o600, path + ".key": 0o600, path + ".lock": 0o600} {
		if got := perm(t, p); got != want {
			t.Errorf("mode of %s = %#o, want %#o", p, got, want)
		}
	}
	key, err := os.ReadFile(path + ".key")
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != 32 {
		t.Errorf("key file holds %d bytes, want 32", len(key))
	}
}

// TestFileStoreNoPlaintext greps the files for the secret in every encoding
// the implementation could plausibly leak it in.
func TestFileStoreNoPlaintext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secrets.db")
	s := mustOpen(t, path)
	const secret, name = "correct-horse-battery-staple", "tenants/acme/foreman-admin"
	mustPut(t, s, name, secret)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(path + ".key")
	if err != nil {
		t.Fatal(err)
	}
	for what, needle := range map[string][]byte{
		"value":            []byte(secret),
		"value, base64":    []byte(base64.StdEncoding.EncodeToString([]byte(secret))),
		"value, hex":       []byte(hex.EncodeToString([]byte(secret))),
		"path":             []byte(name),
		"path segment":     []byte("foreman-admin"),
		"key":              key,
		"key, hex":         []byte(hex.EncodeToString(key)),
		"json punctuation": []byte(`":"`),
	} {
		if bytes.Contains(data, needle) {
			t.Errorf("data file contains the %s", what)
		}
	}
}

// TestFileFormat decrypts the data file by hand, following the layout the
// README documents, so that an operator can recover secrets without this
// package.
func TestFileFormat(t *testing.T) {
	path := seeded(t)
	data, _ := os.ReadFile(path)
	key, _ := os.ReadFile(path + ".key")
	if string(data[:8]) != "MLBLSECR" || binary.BigEndian.Uint16(data[8:10]) != 1 {
		t.Fatalf("header starts %q, want magic MLBLSECR and version 1", data[:10])
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := gcm.Open(nil, data[18:30], data[30:], data[:30])
	if err != nil {
		t.Fatalf("decrypt with the header as additional data: %v", err)
	}
	var m map[string][]byte
	if err := json.Unmarshal(plain, &m); err != nil {
		t.Fatalf("contents are not a JSON object of base64 values: %v", err)
	}
	if string(m["bmc/node-1"]) != "calvin" || string(m["tenants/acme/foreman-admin"]) != "hunter2" || len(m) != 2 {
		t.Errorf("decrypted contents = %q", m)
	}
}

// TestFileStoreCrashMidWrite leaves what a crash during a write would: temp
// files next to the data file, complete or not. Opening keeps the last
// acknowledged contents and removes the leftovers.
func TestFileStoreCrashMidWrite(t *testing.T) {
	path := seeded(t)
	dir := filepath.Dir(path)
	orig, _ := os.ReadFile(path)

	// A complete file for a write that was never acknowledged (no rename).
	s := mustOpen(t, path)
	mustPut(t, s, "bmc/node-1", "never-acknowledged")
	newer, _ := os.ReadFile(path)
	mustClose(t, s)
	writeFile(t, path, orig, 0o600)

	leftovers := map[string][]byte{
		"secrets.db.tmp-123":     orig[:len(orig)/2],
		"secrets.db.tmp-456":     newer,
		"secrets.db.tmp-789":     nil,
		"secrets.db.key.tmp-111": make([]byte, 13),
	}
	for n, b := range leftovers {
		writeFile(t, filepath.Join(dir, n), b, 0o600)
	}
	writeFile(t, filepath.Join(dir, "unrelated.tmp-1"), []byte("keep"), 0o600)

	s = mustOpen(t, path)
	mustGet(t, s, "bmc/node-1", "calvin")
	mustGet(t, s, "tenants/acme/foreman-admin", "hunter2")
	for n := range leftovers {
		if _, err := os.Lstat(filepath.Join(dir, n)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("leftover %s still there (%v)", n, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "unrelated.tmp-1")); err != nil {
		t.Errorf("an unrelated file was removed: %v", err)
	}
}

// TestFileStoreFailedWrite makes the rename fail (a directory sits where the
// data file goes), which even root cannot write through: the Put fails, the
// store keeps its previous state, and no temp file is left.
func TestFileStoreFailedWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secrets.db")
	s := mustOpen(t, path)
	mustPut(t, s, "bmc/node-1", "calvin")
	remove(t, path)
	if err := os.MkdirAll(filepath.Join(path, "blocker"), 0o700); err != nil {
		t.Fatal(err)
	}

	err := s.Put(t.Context(), "bmc/node-1", []byte("new-value"))
	checkErr(t, err, nil, `put secret "bmc/node-1": write data file`)
	if strings.Contains(err.Error(), "new-value") {
		t.Errorf("error quotes the value: %v", err)
	}
	checkErr(t, s.Delete(t.Context(), "bmc/node-1"), nil, "write data file")
	mustGet(t, s, "bmc/node-1", "calvin")
	entries, _ := os.ReadDir(filepath.Dir(path))
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temp file %s left behind", e.Name())
		}
	}

	if err := os.RemoveAll(path); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, "bmc/node-2", "ipmi")
	mustClose(t, s)
	s = mustOpen(t, path)
	mustGet(t, s, "bmc/node-1", "calvin")
	mustGet(t, s, "bmc/node-2", "ipmi")
}

func TestFileStoreLockAndClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secrets.db")
	s := mustOpen(t, path)
	mustPut(t, s, "bmc/node-1", "calvin")

	_, err := secrets.OpenFile(path)
	checkErr(t, err, secrets.ErrLocked, "is locked")

	mustClose(t, s)
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	ctx := t.Context()
	_, err = s.Get(ctx, "bmc/node-1")
	checkErr(t, err, secrets.ErrClosed, "closed")
	checkErr(t, s.Put(ctx, "bmc/node-1", []byte("x")), secrets.ErrClosed, "closed")
	checkErr(t, s.Delete(ctx, "bmc/node-1"), secrets.ErrClosed, "closed")
	_, err = s.List(ctx, "")
	checkErr(t, err, secrets.ErrClosed, "closed")

	s2 := mustOpen(t, path)
	mustGet(t, s2, "bmc/node-1", "calvin")
}

// TestFileStoreConcurrentPersist checks that concurrent writers all reach
// the file, not just memory.
func TestFileStoreConcurrentPersist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secrets.db")
	s := mustOpen(t, path)
	done := make(chan error)
	for i := range 50 {
		go func() { done <- s.Put(t.Context(), "n/"+strconv.Itoa(i), []byte(strconv.Itoa(i))) }()
	}
	for range 50 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	mustClose(t, s)
	s = mustOpen(t, path)
	for i := range 50 {
		mustGet(t, s, "n/"+strconv.Itoa(i), strconv.Itoa(i))
	}
}

func writeFile(t *testing.T, path string, b []byte, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func remove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

// snapshot maps each file name in dir to its mode and contents.
