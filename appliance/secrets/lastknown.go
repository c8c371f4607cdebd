package secrets

import (
	"context"
	"errors"
	"log/slog"
	"sync"
)

// LastKnown wraps a remote store (Vault) so that what runs keeps running
// while the store is out of reach: a Get that fails for any reason other
// than ErrNotFound, ErrInvalidPath or the caller's context answers the
// value this process last read or wrote at that path, if any, and logs
// that it did. Writes still need the store, so new work (a new tenant's
// onboarding) fails with the store's error. Values stay in this process's
// memory only, like every secret the appliance uses.
type LastKnown struct {
	Store
	Log *slog.Logger

	mu   sync.Mutex
	last map[string][]byte
	// writes counts this process's writes and deletes of each path, so
	// that a read that raced one does not remember what it replaced.
	writes map[string]uint64
}

// NewLastKnown returns s with a last-known-value fallback for Get.
func NewLastKnown(s Store, log *slog.Logger) *LastKnown {
	return &LastKnown{Store: s, Log: log, last: map[string][]byte{}, writes: map[string]uint64{}}
}

// Get reads path from the store, or its last known value when the store
// fails.
func (l *LastKnown) Get(ctx context.Context, path string) ([]byte, error) {
	l.mu.Lock()
	gen := l.writes[path]
	l.mu.Unlock()
	v, err := l.Store.Get(ctx, path)
	l.mu.Lock()
	defer l.mu.Unlock()
	raced := l.writes[path] != gen
	switch {
	case err == nil:
		if !raced {
			l.last[path] = clone(v)
		}
		return v, nil
	case errors.Is(err, ErrNotFound):
		if !raced {
			delete(l.last, path)
		}
		return nil, err
	case errors.Is(err, ErrInvalidPath) || ctx.Err() != nil:
		return nil, err
	}
	if old, ok := l.last[path]; ok {
		l.Log.Warn("secret store unavailable; using the value last read", "path", path, "err", err)
		return clone(old), nil
	}
	return nil, err
}

// Put writes path to the store and remembers the value.
func (l *LastKnown) Put(ctx context.Context, path string, value []byte) error {
	err := l.Store.Put(ctx, path, value)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes[path]++
	if err != nil {
		// Most likely unwritten: what was known stays known.
		return err
	}
	l.last[path] = clone(value)
	return nil
}

// Delete removes path from the store and forgets it.
func (l *LastKnown) Delete(ctx context.Context, path string) error {
	err := l.Store.Delete(ctx, path)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes[path]++
	delete(l.last, path)
	return err
}
