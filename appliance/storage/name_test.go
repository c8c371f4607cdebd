package storage

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	long := strings.Repeat("a", MaxSegmentLen)
	tests := map[string]struct {
		name    string
		wantErr string // substring; "" means valid
	}{
		"plain":                {name: "scratch"},
		"image":                {name: "images/ubuntu-22.04"},
		"disk":                 {name: "disks/acme.web-1"},
		"snapshot":             {name: "snapshots/acme.snap-1"},
		"digits and underline": {name: "0/a_b"},
		"63 bytes each":        {name: long + "/" + long},
		"single char":          {name: "a"},

		"empty":              {name: "", wantErr: "empty segment"},
		"traversal":          {name: "../x", wantErr: `contains ".."`},
		"traversal inside":   {name: "disks/../../etc", wantErr: `contains ".."`},
		"double dot in name": {name: "a..b", wantErr: `contains ".."`},
		"absolute":           {name: "/abs", wantErr: "empty segment"},
		"double slash":       {name: "a//b", wantErr: "must start with"},
		"trailing slash":     {name: "disks/", wantErr: "empty segment"},
		"two slashes":        {name: "a/b/c", wantErr: "only [a-z0-9._-]"},
		"uppercase":          {name: "Images/x", wantErr: "must start with"},
		"uppercase inside":   {name: "disks/Web", wantErr: "must start with"},
		"uppercase later":    {name: "disks/wEb", wantErr: "only [a-z0-9._-]"},
		"64 bytes":           {name: long + "a", wantErr: "longer than 63"},
		"64 byte namespace":  {name: long + "a/x", wantErr: "longer than 63"},
		"non-ASCII":          {name: "disks/caf\u00e9", wantErr: "only [a-z0-9._-]"},
		"leading dot":        {name: ".tmp/x", wantErr: "must start with"},
		"lock file":          {name: ".lock", wantErr: "must start with"},
		"leading dash":       {name: "-x", wantErr: "must start with"},
		"space":              {name: "a b", wantErr: "only [a-z0-9._-]"},
		"NUL":                {name: "a\x00b", wantErr: "only [a-z0-9._-]"},
		"backslash":          {name: `a\b`, wantErr: "only [a-z0-9._-]"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			err := ValidateName(tt.name)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ValidateName(%q) = %v, want nil", tt.name, err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidName) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ValidateName(%q) = %v, want ErrInvalidName containing %q", tt.name, err, tt.wantErr)
			}
		})
	}
}
