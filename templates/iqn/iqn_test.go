package iqn

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	tests := map[string]struct {
		name, extra, err string
	}{
		"plain":                 {name: "iqn.2026-11.io.malleable"},
		"with unique":           {name: "iqn.2026-11.io.malleable:acme.web-1"},
		"underscore when extra": {name: "iqn.2026-11.io.malleable:tenant_a", extra: "_"},
		"underscore refused":    {name: "iqn.2026-11.io.malleable:tenant_a", err: "only [a-z0-9.:-]"},
		"underscore message":    {name: "iqn.2026-11.io.malleable:A", extra: "_", err: "only [a-z0-9.:_-]"},
		"empty":                 {name: "", err: "empty"},
		"too long":              {name: "iqn.2026-11.io.m:" + strings.Repeat("a", 220), err: "longer than 223 bytes"},
		"no prefix":             {name: "eui.02004567A425678D", err: `does not start with "iqn."`},
		"month 13":              {name: "iqn.2026-13.io.malleable", err: "expected iqn.<yyyy-mm>"},
		"upper-case authority":  {name: "iqn.2026-11.IO.malleable", err: "only [a-z0-9-] and '.'"},
		"label ends with dash":  {name: "iqn.2026-11.io-.malleable", err: "starts or ends with '-'"},
		"empty unique":          {name: "iqn.2026-11.io.malleable:", err: "empty name after ':'"},
		"space":                 {name: "iqn.2026-11.io.malleable:a b", err: "may follow the naming authority"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := Check(tc.name, tc.extra)
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("Check(%q) = %v", tc.name, err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("Check(%q) = %v, want an error containing %q", tc.name, err, tc.err)
			}
		})
	}
}
