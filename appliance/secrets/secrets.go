// Package secrets keeps the appliance's secrets — BMC credentials, Foreman
// admin passwords, CHAP secrets, certificates — behind one small contract,
// Store. FileStore is the embedded implementation (one AES-256-GCM encrypted
// file); Memory is an in-memory one for tests of other packages; the Vault KV
// v2 implementation is in the vault subpackage. The contract suite in
// secretstest runs against all of them.
//
// Secret values never appear in errors or logs; paths do, because they are
// names, not secrets.
package secrets

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// MaxPathLen is the longest secret path, in bytes.
const MaxPathLen = 200

// MaxValueSize is the largest secret value, in bytes (64 KiB).
const MaxValueSize = 64 << 10

// Sentinel errors of the contract; match them with errors.Is.
var (
	// ErrNotFound means no secret is stored at the path.
	ErrNotFound = errors.New("secret not found")
	// ErrInvalidPath means a path or list prefix breaks the naming rules
	// (see ValidatePath); nothing was read or changed.
	ErrInvalidPath = errors.New("invalid secret path")
	// ErrTooLarge means a value is longer than MaxValueSize; nothing was
	// changed.
	ErrTooLarge = errors.New("secret value too large")
)

// Store is the contract every secrets implementation meets; the suite in
// secretstest checks it. Consumers should declare the narrower interface
// they need (often just Get) and accept any Store.
//
// Paths are slash-separated names such as "bmc/node-1" or
// "tenants/acme/foreman-admin", checked by ValidatePath. A path may be both a
// secret and the parent of others ("bmc/node-1" and "bmc/node-1/user"), as in
// Vault.
//
// Every method returns an error wrapping ctx.Err() and changes nothing when
// its context is already done; an invalid path gives ErrInvalidPath and
// changes nothing. Implementations are safe for concurrent use.
type Store interface {
	// Get returns a copy of the value at path (never nil, even when
	// empty), or ErrNotFound.
	Get(ctx context.Context, path string) ([]byte, error)
	// Put creates or replaces the value at path. The value, which may be
	// empty and may hold any bytes, is copied; longer than MaxValueSize is
	// ErrTooLarge.
	Put(ctx context.Context, path string, value []byte) error
	// Delete removes the value at path; deleting an absent path is not an
	// error.
	Delete(ctx context.Context, path string) error
	// List returns, sorted bytewise, the full paths of every secret under
	// prefix at any depth. The prefix is "" (every secret) or a valid path
	// with an optional trailing slash naming a directory: "bmc/node-1" and
	// "bmc/node-1/" both list "bmc/node-1/user" but neither lists
	// "bmc/node-1" itself nor "bmc/node-10/user". No match is an empty
	// list, not an error.
	List(ctx context.Context, prefix string) ([]string, error)
}

// ValidatePath reports whether p is a valid secret path: 1 to MaxPathLen
// bytes of segments separated by single slashes, each segment matching
// [a-z0-9][a-z0-9._-]*, with no ".." anywhere and no leading or trailing
// slash. The error wraps ErrInvalidPath and does not repeat p.
func ValidatePath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("%w: empty", ErrInvalidPath)
	case len(p) > MaxPathLen:
		return fmt.Errorf("%w: %d bytes, longest allowed is %d", ErrInvalidPath, len(p), MaxPathLen)
	case strings.Contains(p, ".."):
		return fmt.Errorf(`%w: contains ".."`, ErrInvalidPath)
	}
	for i, seg := range strings.Split(p, "/") {
		if seg == "" {
			return fmt.Errorf("%w: segment %d is empty (leading, trailing or double slash)", ErrInvalidPath, i+1)
		}
		for j, r := range seg {
			lowerOrDigit := r >= 'a' && r <= 'z' || r >= '0' && r <= '9'
			if !lowerOrDigit && (j == 0 || r != '.' && r != '_' && r != '-') {
				return fmt.Errorf("%w: segment %d: character %q not allowed (segments match [a-z0-9][a-z0-9._-]*)",
					ErrInvalidPath, i+1, r)
			}
		}
	}
	return nil
}

// ValidatePrefix reports whether prefix is a valid List prefix: "" or a valid
// path with at most one trailing slash. The error wraps ErrInvalidPath.
func ValidatePrefix(prefix string) error {
	_, err := dirPrefix(prefix)
	return err
}

// dirPrefix validates a List prefix and returns it as a directory with its
// trailing slash ("" stays "").
func dirPrefix(prefix string) (string, error) {
	if prefix == "" {
		return "", nil
	}
	dir := strings.TrimSuffix(prefix, "/")
	if err := ValidatePath(dir); err != nil {
		return "", err
	}
	return dir + "/", nil
}

// checkPut validates the arguments of Put.
func checkPut(path string, value []byte) error {
	if err := ValidatePath(path); err != nil {
		return err
	}
	if len(value) > MaxValueSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(value), MaxValueSize)
	}
	return nil
}

// listUnder returns the sorted keys of m under the directory prefix dir (as
// returned by dirPrefix).
func listUnder(m map[string][]byte, dir string) []string {
	out := []string{}
	for p := range m {
		if strings.HasPrefix(p, dir) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// clone returns a copy of b that is never nil, so an empty secret reads back
// as an empty, non-nil slice.
func clone(b []byte) []byte {
	return append([]byte{}, b...)
}

// BMCPasswordPath is where a node's real BMC password is kept: the admin
// API writes it, the embedded allocator reads it.
func BMCPasswordPath(node string) string { return "bmc/" + node }
