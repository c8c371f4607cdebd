package secrets_test

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/malleable-cloud/malleable/appliance/secrets"
	"github.com/malleable-cloud/malleable/appliance/secrets/secretstest"
)

func TestLastKnownContract(t *testing.T) {
	secretstest.Run(t, func(t *testing.T) secrets.Store {
		return secrets.NewLastKnown(secrets.NewMemory(), slog.New(slog.DiscardHandler))
	})
}

// down is a store that fails every call while it is down, as a stopped
// Vault does (the Vault run of cmd/malleable's onboarding test stops a
// real one).
type down struct {
	secrets.Store
	off atomic.Bool
}

var errDown = errors.New("connection refused")

func (d *down) Get(ctx context.Context, p string) ([]byte, error) {
	if d.off.Load() {
		return nil, errDown
	}
	return d.Store.Get(ctx, p)
}

func (d *down) Put(ctx context.Context, p string, v []byte) error {
	if d.off.Load() {
		return errDown
	}
	return d.Store.Put(ctx, p, v)
}

// Reads of what was known go on while the store is down; writes and reads
// of what was never read fail with the store's error.
func TestLastKnownWhileDown(t *testing.T) {
	ctx := context.Background()
	d := &down{Store: secrets.NewMemory()}
	l := secrets.NewLastKnown(d, slog.New(slog.DiscardHandler))
	if err := l.Put(ctx, "bmc/node-1", []byte("pw1")); err != nil {
		t.Fatal(err)
	}
	d.Store.Put(ctx, "bmc/node-2", []byte("pw2")) // never read through l
	d.off.Store(true)
	if v, err := l.Get(ctx, "bmc/node-1"); err != nil || string(v) != "pw1" {
		t.Errorf("known value while down: %q %v", v, err)
	}
	if _, err := l.Get(ctx, "bmc/node-2"); !errors.Is(err, errDown) {
		t.Errorf("unknown value while down: %v, want the store's error", err)
	}
	if err := l.Put(ctx, "bmc/node-3", []byte("x")); !errors.Is(err, errDown) {
		t.Errorf("write while down: %v", err)
	}
	d.off.Store(false)
	d.Store.Delete(ctx, "bmc/node-1")
	if _, err := l.Get(ctx, "bmc/node-1"); !errors.Is(err, secrets.ErrNotFound) {
		t.Fatalf("deleted in the store: %v", err)
	}
	d.off.Store(true)
	if _, err := l.Get(ctx, "bmc/node-1"); !errors.Is(err, errDown) {
		t.Errorf("a value the store said was gone came back while down: %v", err)
	}
}

// slowGet is a store whose Gets wait for release after reading, so a
// write can land between a read and its remembering.
type slowGet struct {
	secrets.Store
	read, release chan struct{}
}

func (s *slowGet) Get(ctx context.Context, p string) ([]byte, error) {
	v, err := s.Store.Get(ctx, p)
	s.read <- struct{}{}
	<-s.release
	return v, err
}

// A read that raced a write does not remember the value the write
// replaced: with the store down, the written value is the one known.
func TestLastKnownReadRacingWrite(t *testing.T) {
	ctx := context.Background()
	mem := secrets.NewMemory()
	mem.Put(ctx, "tenants/a/broker/token", []byte("old"))
	s := &slowGet{Store: mem, read: make(chan struct{}), release: make(chan struct{})}
	d := &down{Store: s}
	l := secrets.NewLastKnown(d, slog.New(slog.DiscardHandler))

	got := make(chan string)
	go func() {
		v, _ := l.Get(ctx, "tenants/a/broker/token")
		got <- string(v)
	}()
	<-s.read // the reader holds "old"
	if err := l.Put(ctx, "tenants/a/broker/token", []byte("new")); err != nil {
		t.Fatal(err)
	}
	close(s.release)
	if v := <-got; v != "old" {
		t.Fatalf("the racing read returned %q, want what it read (old)", v)
	}
	d.off.Store(true)
	if v, err := l.Get(ctx, "tenants/a/broker/token"); err != nil || string(v) != "new" {
		t.Errorf("known value while down after a racing read: %q %v, want new", v, err)
	}
}
