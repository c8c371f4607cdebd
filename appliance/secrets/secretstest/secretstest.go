// Package secretstest is the contract test suite of secrets.Store: every
// implementation (memory, embedded file, Vault) runs the same Run. Import it
// from tests only.
package secretstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/secrets"
)

// Run checks that the stores made by newStore meet the secrets.Store
// contract. newStore is called once per subtest; it must return an empty
// store that nothing else uses, and register any cleanup with t.
func Run(t *testing.T, newStore func(t *testing.T) secrets.Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, secrets.Store)
	}{
		{"round trip", testRoundTrip},
		{"replace", testReplace},
		{"binary values", testBinaryValues},
		{"values are copies", testCopies},
		{"get missing", testGetMissing},
		{"delete is idempotent", testDelete},
		{"list by prefix", testList},
		{"paths", testPaths},
		{"list prefixes", testPrefixes},
		{"too large", testTooLarge},
		{"concurrent puts", testConcurrent},
		{"context done", testContextDone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

func put(t *testing.T, s secrets.Store, path string, value []byte) {
	t.Helper()
	if err := s.Put(t.Context(), path, value); err != nil {
		t.Fatalf("Put(%q): %v", path, err)
	}
}

func wantValue(t *testing.T, s secrets.Store, path string, want []byte) {
	t.Helper()
	got, err := s.Get(t.Context(), path)
	if err != nil {
		t.Fatalf("Get(%q): %v", path, err)
	}
	if !bytes.Equal(got, want) || got == nil {
		t.Errorf("Get(%q) = %d bytes %q, want %d bytes %q", path, len(got), trim(got), len(want), trim(want))
	}
}

func wantMissing(t *testing.T, s secrets.Store, path string) {
	t.Helper()
	if v, err := s.Get(t.Context(), path); !errors.Is(err, secrets.ErrNotFound) {
		t.Errorf("Get(%q) = %d bytes, %v; want ErrNotFound", path, len(v), err)
	}
}

func wantList(t *testing.T, s secrets.Store, prefix string, want ...string) {
	t.Helper()
	got, err := s.List(t.Context(), prefix)
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	if !slices.Equal(got, want) { // nil and empty are equal here

		t.Errorf("List(%q) = %q, want %q", prefix, got, want)
	}
}

// wantErr fails unless err wraps target and does not quote value.
func wantErr(t *testing.T, op string, err, target error, value []byte) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: error %v, want %v", op, err, target)
		return
	}
	if len(value) > 0 && strings.Contains(err.Error(), string(value)) {
		t.Errorf("%s: error quotes the secret value: %v", op, err)
	}
}

// trim keeps failure messages short.
func trim(b []byte) []byte {
	if len(b) > 32 {
		return b[:32]
	}
	return b
}

func testRoundTrip(t *testing.T, s secrets.Store) {
	values := map[string][]byte{
		"bmc/node-1":                               []byte("admin:calvin"),
		"tenants/acme/foreman-admin":               []byte("correct horse battery staple"),
		"iscsi/iqn.2026-11.cloud.malleable_disk-7": []byte("chap-secret"),
		"a": []byte("x"),
	}
	for p, v := range values {
		put(t, s, p, v)
	}
	for p, v := range values {
		wantValue(t, s, p, v)
	}
}

func testReplace(t *testing.T, s secrets.Store) {
	put(t, s, "bmc/node-1", []byte("a longer first value"))
	put(t, s, "bmc/node-1", []byte("short"))
	wantValue(t, s, "bmc/node-1", []byte("short"))
	wantList(t, s, "", "bmc/node-1")
}

func testBinaryValues(t *testing.T, s secrets.Store) {
	every := make([]byte, 256)
	for i := range every {
		every[i] = byte(i)
	}
	largest := bytes.Repeat([]byte{0, 0xff, 'k', 0x80}, secrets.MaxValueSize/4)
	tests := map[string]struct{ in, want []byte }{
		"zero bytes only":      {[]byte{0, 0, 0}, []byte{0, 0, 0}},
		"embedded zero byte":   {[]byte("pass\x00word"), []byte("pass\x00word")},
		"every byte value":     {every, every},
		"invalid utf-8":        {[]byte{0xff, 0xfe, 0xc3}, []byte{0xff, 0xfe, 0xc3}},
		"pem with newlines":    {[]byte("-----BEGIN X-----\nAAAA\n-----END X-----\n"), []byte("-----BEGIN X-----\nAAAA\n-----END X-----\n")},
		"empty":                {[]byte{}, []byte{}},
		"nil reads as empty":   {nil, []byte{}},
		"exactly the max size": {largest, largest},
	}
	i := 0
	for name, tc := range tests {
		path := fmt.Sprintf("bin/v%d", i)
		i++
		t.Run(name, func(t *testing.T) {
			put(t, s, path, tc.in)
			wantValue(t, s, path, tc.want)
		})
	}
}

func testCopies(t *testing.T, s secrets.Store) {
	in := []byte("original")
	put(t, s, "copy/me", in)
	in[0] = 'X' // the caller reuses its buffer
	got, err := s.Get(t.Context(), "copy/me")
	if err != nil {
		t.Fatal(err)
	}
	got[1] = 'Y' // the caller scribbles on the result
	wantValue(t, s, "copy/me", []byte("original"))
}

func testGetMissing(t *testing.T, s secrets.Store) {
	wantMissing(t, s, "never/stored")
	put(t, s, "bmc/node-1/user", []byte("root"))
	wantMissing(t, s, "bmc/node-1")        // a parent is not a secret
	wantMissing(t, s, "bmc/node-1/user/x") // nor is a child
	wantMissing(t, s, "bmc/node-1/use")    // nor a prefix of a name
}

func testDelete(t *testing.T, s secrets.Store) {
	ctx := t.Context()
	if err := s.Delete(ctx, "never/stored"); err != nil {
		t.Fatalf("Delete of an absent path: %v", err)
	}
	put(t, s, "bmc/node-1", []byte("pw"))
	put(t, s, "bmc/node-2", []byte("pw2"))
	for range 2 {
		if err := s.Delete(ctx, "bmc/node-1"); err != nil {
			t.Fatalf("Delete: %v", err)
		}
	}
	wantMissing(t, s, "bmc/node-1")
	wantValue(t, s, "bmc/node-2", []byte("pw2"))
	wantList(t, s, "", "bmc/node-2")
	put(t, s, "bmc/node-1", []byte("again")) // a deleted path can be reused
	wantValue(t, s, "bmc/node-1", []byte("again"))
}

func testList(t *testing.T, s secrets.Store) {
	for _, p := range []string{
		"bmc/node-2", "bmc/node-10/user", "bmc/node-1/user", "bmc/node-1", "bmc/node-1/pass",
		"bmcx/y", "tenants/acme/foreman-admin", "tenants/acme/bmc/node-1", "bmc/node-1/deep/er",
	} {
		put(t, s, p, []byte("v"))
	}
	node1 := []string{"bmc/node-1/deep/er", "bmc/node-1/pass", "bmc/node-1/user"}
	tests := map[string]struct {
		prefix string
		want   []string
	}{
		"directory with slash":    {"bmc/node-1/", node1},
		"directory without slash": {"bmc/node-1", node1},
		"nested directory":        {"bmc/node-1/deep", []string{"bmc/node-1/deep/er"}},
		"top level": {"bmc", []string{
			"bmc/node-1", "bmc/node-1/deep/er", "bmc/node-1/pass", "bmc/node-1/user", "bmc/node-10/user", "bmc/node-2",
		}},
		"everything": {"", []string{
			"bmc/node-1", "bmc/node-1/deep/er", "bmc/node-1/pass", "bmc/node-1/user", "bmc/node-10/user", "bmc/node-2",
			"bmcx/y", "tenants/acme/bmc/node-1", "tenants/acme/foreman-admin",
		}},
		"a secret, not a directory": {"bmc/node-2", nil},
		"a partial segment":         {"bmc/node", nil},
		"no such directory":         {"nothing", nil},
		"not a substring match":     {"acme", nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) { wantList(t, s, tc.prefix, tc.want...) })
	}
	if err := s.Delete(t.Context(), "bmc/node-1/pass"); err != nil {
		t.Fatal(err)
	}
	wantList(t, s, "bmc/node-1/", "bmc/node-1/deep/er", "bmc/node-1/user")
}

func testPaths(t *testing.T, s secrets.Store) {
	value := []byte("must-not-be-stored-or-quoted")
	tests := map[string]struct {
		path  string
		valid bool
	}{
		"one segment":          {"a", true},
		"digits first":         {"0/9a", true},
		"punctuation inside":   {"a.b_c-d/e-f.g", true},
		"colon as in an iqn":   {"iscsi/iqn.2026-11.cloud.malleable:x", false},
		"200 bytes":            {strings.Repeat("a", 200), true},
		"200 bytes, segments":  {strings.Repeat("a/", 99) + "aa", true},
		"empty":                {"", false},
		"leading slash":        {"/a", false},
		"trailing slash":       {"a/", false},
		"only a slash":         {"/", false},
		"double slash":         {"a//b", false},
		"dot dot first":        {"../x", false},
		"dot dot inside":       {"a/../b", false},
		"dot dot at the end":   {"a/..", false},
		"dot dot in a segment": {"a..b", false},
		"dot segment":          {"a/./b", false},
		"leading dot":          {".hidden", false},
		"leading dash":         {"-a", false},
		"leading underscore":   {"_a", false},
		"upper case":           {"A", false},
		"upper case inside":    {"bmc/Node-1", false},
		"space":                {"a b", false},
		"201 bytes":            {strings.Repeat("a", 201), false},
		"201 bytes, segments":  {strings.Repeat("a/", 100) + "a", false},
		"non-ascii":            {"bmc/nöde", false},
		"non-ascii letter":     {"ｂｍｃ", false},
		"nul byte":             {"a\x00b", false},
		"newline":              {"a\nb", false},
		"backslash":            {`a\b`, false},
		"colon":                {"a:b", false},
		"percent escape":       {"a%2fb", false},
	}
	var stored []string
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			if tc.valid {
				put(t, s, tc.path, value)
				wantValue(t, s, tc.path, value)
				stored = append(stored, tc.path)
				return
			}
			err := s.Put(ctx, tc.path, value)
			wantErr(t, "Put", err, secrets.ErrInvalidPath, value)
			_, err = s.Get(ctx, tc.path)
			wantErr(t, "Get", err, secrets.ErrInvalidPath, nil)
			err = s.Delete(ctx, tc.path)
			wantErr(t, "Delete", err, secrets.ErrInvalidPath, nil)
		})
	}
	slices.Sort(stored)
	wantList(t, s, "", stored...) // nothing invalid was stored
}

func testPrefixes(t *testing.T, s secrets.Store) {
	put(t, s, "a/b", []byte("v"))
	tests := map[string]struct {
		prefix string
		valid  bool
	}{
		"everything":          {"", true},
		"directory":           {"a", true},
		"directory and slash": {"a/", true},
		"200 bytes":           {strings.Repeat("a", 200), true},
		"only a slash":        {"/", false},
		"leading slash":       {"/a", false},
		"two trailing":        {"a//", false},
		"double slash":        {"a//b/", false},
		"dot dot":             {"../x", false},
		"upper case":          {"A/", false},
		"space":               {"a b", false},
		"non-ascii":           {"é/", false},
		"201 bytes":           {strings.Repeat("a", 201), false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := s.List(t.Context(), tc.prefix)
			if tc.valid && err != nil {
				t.Errorf("List(%q): %v", tc.prefix, err)
			}
			if !tc.valid {
				wantErr(t, "List", err, secrets.ErrInvalidPath, nil)
			}
		})
	}
}

func testTooLarge(t *testing.T, s secrets.Store) {
	big := bytes.Repeat([]byte("TOPSECRET"), secrets.MaxValueSize/9+1)
	if len(big) <= secrets.MaxValueSize {
		t.Fatalf("test value of %d bytes is not too large", len(big))
	}
	wantErr(t, "Put new", s.Put(t.Context(), "big/new", big), secrets.ErrTooLarge, big)
	wantMissing(t, s, "big/new")

	justOver := make([]byte, secrets.MaxValueSize+1)
	put(t, s, "big/old", []byte("kept"))
	wantErr(t, "Put replace", s.Put(t.Context(), "big/old", justOver), secrets.ErrTooLarge, nil)
	wantValue(t, s, "big/old", []byte("kept"))
}

func testConcurrent(t *testing.T, s secrets.Store) {
	const n = 50
	ctx := t.Context()
	path := func(i int) string { return fmt.Sprintf("concurrent/node-%d", i) }
	value := func(i int) []byte { return fmt.Appendf(nil, "secret-%d-\x00-%d", i, i*i) }
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := s.Put(ctx, path(i), value(i)); err != nil {
				t.Errorf("Put(%q): %v", path(i), err)
				return
			}
			// Reads race with the other writers.
			if got, err := s.Get(ctx, path(i)); err != nil || !bytes.Equal(got, value(i)) {
				t.Errorf("Get(%q) right after Put = %q, %v", path(i), got, err)
			}
			if _, err := s.List(ctx, "concurrent"); err != nil {
				t.Errorf("List: %v", err)
			}
		})
	}
	wg.Wait()
	var want []string
	for i := range n {
		wantValue(t, s, path(i), value(i))
		want = append(want, path(i))
	}
	slices.Sort(want)
	wantList(t, s, "concurrent/", want...)
}

func testContextDone(t *testing.T, s secrets.Store) {
	put(t, s, "ctx/kept", []byte("v"))
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	expired, cancel2 := context.WithDeadline(t.Context(), time.Unix(0, 0))
	defer cancel2()
	for name, tc := range map[string]struct {
		ctx  context.Context
		want error
	}{
		"cancelled": {cancelled, context.Canceled},
		"expired":   {expired, context.DeadlineExceeded},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := s.Get(tc.ctx, "ctx/kept")
			wantErr(t, "Get", err, tc.want, nil)
			wantErr(t, "Put", s.Put(tc.ctx, "ctx/new", []byte("v")), tc.want, nil)
			wantErr(t, "Put replace", s.Put(tc.ctx, "ctx/kept", []byte("changed")), tc.want, nil)
			wantErr(t, "Delete", s.Delete(tc.ctx, "ctx/kept"), tc.want, nil)
			_, err = s.List(tc.ctx, "")
			wantErr(t, "List", err, tc.want, nil)
			wantMissing(t, s, "ctx/new")
			wantValue(t, s, "ctx/kept", []byte("v"))
		})
	}
}
