//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package secrets

import (
	"fmt"
	"os"
)

// lockFile opens (creating) path. This platform has no flock, so nothing
// stops a second process from opening the store: run one at a time.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	return f, nil
}
