package appliance

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// ErrAlreadyRunning is returned when another process holds the data
// directory.
var ErrAlreadyRunning = errors.New("already running")

// lockName is the lock file in the data directory; it holds the pid of
// the process that has the directory.
const lockName = "malleable.lock"

// lockDataDir takes the data directory for this process: an exclusive
// advisory lock on <dir>/malleable.lock, which then holds our pid. The
// kernel drops the lock when the process exits, however it exits. A held
// lock is ErrAlreadyRunning, naming the holder's pid.
func lockDataDir(dir string) (release func(), err error) {
	path := filepath.Join(dir, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open data directory lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			pid := "unknown"
			if b, rerr := os.ReadFile(path); rerr == nil && len(bytes.TrimSpace(b)) > 0 {
				pid = string(bytes.TrimSpace(b))
			}
			return nil, fmt.Errorf("malleable is %w (pid %s) with data dir %s: stop it first, or give this one another --data-dir",
				ErrAlreadyRunning, pid, dir)
		}
		return nil, fmt.Errorf("lock data directory %s: %w", dir, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() { f.Close() }, nil
}

// ensurePrivateDir creates dir with mode 0700, or tightens an existing one
// that group or others may enter to 0700, saying so: it holds the
// appliance's secrets and volumes.
func ensurePrivateDir(dir string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("%s has mode %04o and could not be made private (chmod 700 it): %w", dir, perm, err)
		}
		log.Warn("tightened a directory's mode: it holds secrets and volumes", "dir", dir, "old_mode", fmt.Sprintf("%04o", perm), "new_mode", "0700")
	}
	return nil
}
