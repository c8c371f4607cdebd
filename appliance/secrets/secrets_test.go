package secrets_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/malleable-cloud/malleable/appliance/secrets"
	"github.com/malleable-cloud/malleable/appliance/secrets/secretstest"
)

func TestMemoryContract(t *testing.T) {
	secretstest.Run(t, func(t *testing.T) secrets.Store { return secrets.NewMemory() })
}

func TestMemoryZeroValueContract(t *testing.T) {
	secretstest.Run(t, func(t *testing.T) secrets.Store { return &secrets.Memory{} })
}

func TestFileStoreContract(t *testing.T) {
	secretstest.Run(t, func(t *testing.T) secrets.Store { return openTemp(t) })
}

// TestFileStoreReopenedContract runs the contract against a FileStore that
// is closed and opened again after every write, so every state the suite
// builds has to survive a round trip through the files.
func TestFileStoreReopenedContract(t *testing.T) {
	secretstest.Run(t, func(t *testing.T) secrets.Store {
		path := filepath.Join(t.TempDir(), "secrets.db")
		r := &reopening{t: t, path: path, s: mustOpen(t, path)}
		t.Cleanup(func() { r.s.Close() })
		return r
	})
}

// reopening wraps a FileStore and reopens it after each Put and Delete.
type reopening struct {
	t    *testing.T
	path string
	mu   sync.Mutex
	s    *secrets.FileStore
}

func (r *reopening) reopen() {
	if err := r.s.Close(); err != nil {
		r.t.Errorf("Close: %v", err)
	}
	s, err := secrets.OpenFile(r.path)
	if err != nil {
		r.t.Errorf("reopen: %v", err) // later calls fail with ErrClosed
		return
	}
	r.s = s
}

func (r *reopening) Get(ctx context.Context, path string) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.s.Get(ctx, path)
}

func (r *reopening) Put(ctx context.Context, path string, value []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.reopen()
	return r.s.Put(ctx, path, value)
}

func (r *reopening) Delete(ctx context.Context, path string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.reopen()
	return r.s.Delete(ctx, path)
}

func (r *reopening) List(ctx context.Context, prefix string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.s.List(ctx, prefix)
}

func TestValidatePath(t *testing.T) {
	tests := map[string]struct {
		path, errSubstr string
	}{
		"plain":          {"tenants/acme/foreman-admin", ""},
		"empty":          {"", "empty"},
		"too long":       {string(make([]byte, 201)), "201 bytes, longest allowed is 200"},
		"dot dot":        {"a..b", `contains ".."`},
		"empty segment":  {"a//b", "segment 2 is empty"},
		"trailing slash": {"a/", "segment 2 is empty"},
		"upper case":     {"bmc/Node", `segment 2: character 'N' not allowed`},
		"non-ascii":      {"nöde", `character 'ö' not allowed`},
		"leading dash":   {"-a", `character '-' not allowed`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := secrets.ValidatePath(tc.path)
			checkErr(t, err, secrets.ErrInvalidPath, tc.errSubstr)
		})
	}
}

func TestValidatePrefix(t *testing.T) {
	tests := map[string]struct {
		prefix, errSubstr string
	}{
		"everything":     {"", ""},
		"directory":      {"bmc", ""},
		"with slash":     {"bmc/", ""},
		"two slashes":    {"bmc//", "segment 2 is empty"},
		"leading slash":  {"/bmc", "segment 1 is empty"},
		"only slash":     {"/", "empty"},
		"invalid inside": {"a/B/", "character 'B' not allowed"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			checkErr(t, secrets.ValidatePrefix(tc.prefix), secrets.ErrInvalidPath, tc.errSubstr)
		})
	}
}

// checkErr fails t unless err matches: no error when substr is empty,
// otherwise an error wrapping sentinel whose message contains substr.
func checkErr(t *testing.T, err, sentinel error, substr string) {
	t.Helper()
	if substr == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("got no error, want one containing %q", substr)
	}
	if sentinel != nil && !errors.Is(err, sentinel) {
		t.Errorf("error %q does not wrap %v", err, sentinel)
	}
	if !strings.Contains(err.Error(), substr) {
		t.Errorf("error %q does not contain %q", err, substr)
	}
}
