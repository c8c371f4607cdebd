package hil

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// password is the HIL account's password, either fixed or kept in a file
// that is read again whenever its modification time or size changes.
type password struct {
	path string // empty: value is fixed

	mu      sync.Mutex
	value   string
	modTime time.Time
	size    int64
	read    bool
}

// get returns the current password. A file that cannot be read is an
// error that names the file, never its content.
func (p *password) get() (string, error) {
	if p.path == "" {
		return p.value, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fi, err := os.Stat(p.path)
	if err != nil {
		return "", fmt.Errorf("HIL password file: %w", err)
	}
	if p.read && fi.ModTime().Equal(p.modTime) && fi.Size() == p.size {
		return p.value, nil
	}
	b, err := os.ReadFile(p.path)
	if err != nil {
		return "", fmt.Errorf("HIL password file: %w", err)
	}
	p.value, p.modTime, p.size, p.read = strings.TrimSpace(string(b)), fi.ModTime(), fi.Size(), true
	return p.value, nil
}
