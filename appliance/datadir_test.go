package appliance

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPrivateDataDirs: an existing data directory or M2 directory that
// group or others may enter is made 0700 at start-up, with a log line.
func TestPrivateDataDirs(t *testing.T) {
	data := filepath.Join(t.TempDir(), "state")
	m2dir := filepath.Join(t.TempDir(), "m2")
	for _, d := range []string{data, m2dir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		os.Chmod(d, 0o755) // whatever the umask
	}
	cfg := DefaultConfig(data)
	cfg.M2.Enabled, cfg.M2.Dir = true, m2dir
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	_, sec, release, err := openState(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	defer sec.Close()
	if err := ensurePrivateDir(cfg.M2.Dir, log); err != nil { // what startM2 does first
		t.Fatal(err)
	}
	for _, d := range []string{data, m2dir} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("%s has mode %04o, want 0700", d, fi.Mode().Perm())
		}
		if !strings.Contains(logs.String(), "dir="+d+" old_mode=0755 new_mode=0700") {
			t.Errorf("no log line for %s:\n%s", d, logs.String())
		}
	}
	// A second process on the same data directory is refused, naming us.
	if _, _, _, err := openState(cfg, log); err == nil || !strings.Contains(err.Error(), "already running (pid ") {
		t.Errorf("second openState = %v, want already running", err)
	}
}
