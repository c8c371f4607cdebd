package secrets

import (
	"context"
	"fmt"
	"sync"
)

var _ Store = (*Memory)(nil)

// Memory is a Store held in memory, for tests of other packages. Its zero
// value is an empty store ready to use; it is safe for concurrent use.
type Memory struct {
	mu   sync.RWMutex
	data map[string][]byte
}

// NewMemory returns an empty Memory store.
func NewMemory() *Memory { return &Memory{} }

// Get returns a copy of the value at path, or ErrNotFound.
func (m *Memory) Get(ctx context.Context, path string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("get secret %q: %w", path, err)
	}
	if err := ValidatePath(path); err != nil {
		return nil, fmt.Errorf("get secret %q: %w", path, err)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	v, ok := m.data[path]
	if !ok {
		return nil, fmt.Errorf("get secret %q: %w", path, ErrNotFound)
	}
	return clone(v), nil
}

// Put creates or replaces the value at path with a copy of value.
func (m *Memory) Put(ctx context.Context, path string, value []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put secret %q: %w", path, err)
	}
	if err := checkPut(path, value); err != nil {
		return fmt.Errorf("put secret %q: %w", path, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.data == nil {
		m.data = make(map[string][]byte)
	}
	m.data[path] = clone(value)
	return nil
}

// Delete removes the value at path; an absent path is not an error.
func (m *Memory) Delete(ctx context.Context, path string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete secret %q: %w", path, err)
	}
	if err := ValidatePath(path); err != nil {
		return fmt.Errorf("delete secret %q: %w", path, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.data, path)
	return nil
}

// List returns the sorted paths under prefix (see Store.List).
func (m *Memory) List(ctx context.Context, prefix string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list secrets %q: %w", prefix, err)
	}
	dir, err := dirPrefix(prefix)
	if err != nil {
		return nil, fmt.Errorf("list secrets %q: %w", prefix, err)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return listUnder(m.data, dir), nil
}
