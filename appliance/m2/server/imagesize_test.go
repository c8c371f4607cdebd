package server_test

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestImageSize: a golden image is a disk: at least one 512-byte sector
// and a whole number of them. Anything else is refused with 400, by upload
// or from a file, and leaves nothing behind.
func TestImageSize(t *testing.T) {
	e := newEnv(t, "")
	dir := t.TempDir()
	for name, tc := range map[string]struct {
		size int
		want int
	}{
		"two bytes":       {size: 2, want: 400},
		"empty":           {size: 0, want: 400},
		"511 bytes":       {size: 511, want: 400},
		"a sector and 10": {size: 522, want: 400},
		"one sector":      {size: 512, want: 201},
		"eight sectors":   {size: 4096, want: 201},
	} {
		t.Run(name, func(t *testing.T) {
			e := e.with(t)
			data := bytes.Repeat([]byte{0xeb}, tc.size)
			path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".img")
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			before := e.state()
			for _, rq := range []struct {
				method, path string
				body         any
			}{
				{http.MethodPut, "/m2/v1/images/up", data},
				{http.MethodPost, "/m2/v1/images", map[string]string{"name": "file", "path": path}},
			} {
				status, body := e.do(rq.method, rq.path, "admin", rq.body)
				if status != tc.want {
					t.Errorf("%s %s of %d bytes: status %d, want %d: %s", rq.method, rq.path, tc.size, status, tc.want, body)
				}
				if tc.want == 400 && !strings.Contains(string(body), "512-byte sectors") {
					t.Errorf("%s %s: refusal does not say why: %s", rq.method, rq.path, body)
				}
			}
			if tc.want != 400 {
				e.must(http.StatusNoContent, http.MethodDelete, "/m2/v1/images/up", "admin", nil, nil)
				e.must(http.StatusNoContent, http.MethodDelete, "/m2/v1/images/file", "admin", nil, nil)
			}
			if after := e.state(); !after.equal(before) {
				t.Errorf("left something behind:\nbefore %+v\nafter  %+v", before, after)
			}
		})
	}
}
