package iscsi_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/malleable-cloud/malleable/appliance/iscsi"
)

const goodSecret = "Secret-12345"

// TestApplyRefusesBadInput checks that every bad value is refused with
// ErrInvalid and a clear message, and that tgtadm is never run: the
// Driver's tgtadm is a binary that does not exist, and an observer counts
// argument vectors.
func TestApplyRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	backing := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(backing, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(backing, filepath.Join(dir, "link.img")); err != nil {
		t.Fatal(err)
	}
	good := iscsi.Target{
		IQN:        "iqn.2026-01.cloud.malleable:acme.web-1",
		Backing:    backing,
		CHAPUser:   "acme.web-1",
		CHAPSecret: goodSecret,
		Initiators: []string{"iqn.2026-01.cloud.malleable:node-1"},
	}
	tests := map[string]struct {
		edit    func(*iscsi.Target)
		wantErr string // "" means valid
	}{
		"valid":                     {func(*iscsi.Target) {}, ""},
		"valid, no initiators":      {func(t *iscsi.Target) { t.Initiators = nil }, ""},
		"valid, no unique part":     {func(t *iscsi.Target) { t.IQN = "iqn.2026-01.cloud.malleable" }, ""},
		"valid, 223 bytes":          {func(t *iscsi.Target) { t.IQN = "iqn.2026-01.a:" + strings.Repeat("x", 223-14) }, ""},
		"valid, symlink":            {func(t *iscsi.Target) { t.Backing = filepath.Join(dir, "link.img") }, ""},
		"valid, 16-char secret":     {func(t *iscsi.Target) { t.CHAPSecret = "abcdefgh.-_ABCDE" }, ""},
		"valid, 64-char user":       {func(t *iscsi.Target) { t.CHAPUser = strings.Repeat("u", 64) }, ""},
		"valid, duplicate ACL":      {func(t *iscsi.Target) { t.Initiators = append(t.Initiators, t.Initiators[0]) }, ""},
		"IQN empty":                 {func(t *iscsi.Target) { t.IQN = "" }, "target IQN: empty"},
		"IQN with a space":          {func(t *iscsi.Target) { t.IQN = "iqn.2026-01.cloud.malleable:acme web" }, "only [a-z0-9.:-]"},
		"IQN upper case":            {func(t *iscsi.Target) { t.IQN = "iqn.2026-01.cloud.malleable:Acme" }, "only [a-z0-9.:-]"},
		"IQN upper-case prefix":     {func(t *iscsi.Target) { t.IQN = "IQN.2026-01.cloud.malleable:acme" }, `does not start with "iqn."`},
		"IQN upper-case domain":     {func(t *iscsi.Target) { t.IQN = "iqn.2026-01.Cloud.malleable:acme" }, "naming authority"},
		"IQN too long":              {func(t *iscsi.Target) { t.IQN = "iqn.2026-01.a:" + strings.Repeat("x", 224-14) }, "longer than 223 bytes"},
		"IQN semicolon":             {func(t *iscsi.Target) { t.IQN = "iqn.2026-01.a:b;rm -rf /" }, "only [a-z0-9.:-]"},
		"IQN command substitution":  {func(t *iscsi.Target) { t.IQN = "iqn.2026-01.a:$(reboot)" }, "only [a-z0-9.:-]"},
		"IQN backquote":             {func(t *iscsi.Target) { t.IQN = "iqn.2026-01.a:`id`" }, "only [a-z0-9.:-]"},
		"IQN newline":               {func(t *iscsi.Target) { t.IQN = "iqn.2026-01.a:b\nTarget 9: x" }, "only [a-z0-9.:-]"},
		"IQN underscore":            {func(t *iscsi.Target) { t.IQN = "iqn.2026-01.a:b_c" }, "only [a-z0-9.:-]"},
		"IQN option-like":           {func(t *iscsi.Target) { t.IQN = "--force" }, `does not start with "iqn."`},
		"IQN month 13":              {func(t *iscsi.Target) { t.IQN = "iqn.2026-13.a:b" }, "expected iqn.<yyyy-mm>"},
		"IQN no date":               {func(t *iscsi.Target) { t.IQN = "iqn.cloud.malleable:b" }, "expected iqn.<yyyy-mm>"},
		"IQN empty unique":          {func(t *iscsi.Target) { t.IQN = "iqn.2026-01.a:" }, "empty name after ':'"},
		"IQN label ends with -":     {func(t *iscsi.Target) { t.IQN = "iqn.2026-01.a-.b:c" }, "starts or ends with '-'"},
		"IQN empty label":           {func(t *iscsi.Target) { t.IQN = "iqn.2026-01.a..b:c" }, "labels must be 1 to 63"},
		"eui name":                  {func(t *iscsi.Target) { t.IQN = "eui.02004567a425678d" }, `does not start with "iqn."`},
		"backing empty":             {func(t *iscsi.Target) { t.Backing = "" }, "backing: empty"},
		"backing relative":          {func(t *iscsi.Target) { t.Backing = "disk.img" }, "is not absolute"},
		"backing not clean":         {func(t *iscsi.Target) { t.Backing = dir + "/../" + filepath.Base(dir) + "/disk.img" }, "is not clean"},
		"backing missing":           {func(t *iscsi.Target) { t.Backing = filepath.Join(dir, "missing.img") }, "no such file"},
		"backing directory":         {func(t *iscsi.Target) { t.Backing = dir }, "is not a regular file"},
		"backing device":            {func(t *iscsi.Target) { t.Backing = "/dev/null" }, "is not a regular file"},
		"backing newline":           {func(t *iscsi.Target) { t.Backing = backing + "\nLUN: 2" }, "control characters"},
		"backing too long":          {func(t *iscsi.Target) { t.Backing = "/" + strings.Repeat("a", 1024) }, "longer than 1024 bytes"},
		"secret empty":              {func(t *iscsi.Target) { t.CHAPSecret = "" }, "CHAP secret: empty"},
		"secret 11 characters":      {func(t *iscsi.Target) { t.CHAPSecret = "Secret-1234" }, "shorter than 12"},
		"secret 17 characters":      {func(t *iscsi.Target) { t.CHAPSecret = "Secret-1234567890" }, "longer than 16"},
		"secret with a space":       {func(t *iscsi.Target) { t.CHAPSecret = "Secret 123456" }, "character 7 is outside"},
		"secret with a percent":     {func(t *iscsi.Target) { t.CHAPSecret = "Secret%123456" }, "character 7 is outside"},
		"secret option-like":        {func(t *iscsi.Target) { t.CHAPSecret = "-Secret-123456" }, "starts with '-'"},
		"user empty":                {func(t *iscsi.Target) { t.CHAPUser = "" }, "CHAP user: empty"},
		"user with a slash":         {func(t *iscsi.Target) { t.CHAPUser = "acme/web" }, "outside [A-Za-z0-9._-]"},
		"user with an at":           {func(t *iscsi.Target) { t.CHAPUser = "acme@web" }, "outside [A-Za-z0-9._-]"},
		"user with a dollar":        {func(t *iscsi.Target) { t.CHAPUser = "$USER" }, "outside [A-Za-z0-9._-]"},
		"user too long":             {func(t *iscsi.Target) { t.CHAPUser = strings.Repeat("u", 65) }, "longer than 64"},
		"user option-like":          {func(t *iscsi.Target) { t.CHAPUser = "--outgoing" }, "starts with '-'"},
		"initiator ALL":             {func(t *iscsi.Target) { t.Initiators = []string{"ALL"} }, `initiator 1: "ALL" does not start`},
		"initiator address":         {func(t *iscsi.Target) { t.Initiators = []string{"10.0.0.1"} }, "initiator 1:"},
		"initiator with a space":    {func(t *iscsi.Target) { t.Initiators = []string{good.Initiators[0], "iqn.2026-01.a:b c"} }, "initiator 2:"},
		"initiator upper case":      {func(t *iscsi.Target) { t.Initiators = []string{"iqn.2026-01.a:NODE"} }, "initiator 1:"},
		"several problems reported": {func(t *iscsi.Target) { t.IQN, t.CHAPSecret = "x", "zq9" }, "shorter than 12"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tgt := good
			tgt.Initiators = append([]string(nil), good.Initiators...)
			tc.edit(&tgt)
			err := tgt.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			calls := 0
			d := iscsi.New(iscsi.Options{TgtadmPath: filepath.Join(dir, "no-tgtadm"), ControlPort: 1})
			iscsi.Observe(d, func([]string) { calls++ })
			err = d.Apply(context.Background(), tgt)
			switch {
			case !errors.Is(err, iscsi.ErrInvalid):
				t.Errorf("Apply() = %v, want ErrInvalid", err)
			case !strings.Contains(err.Error(), tc.wantErr):
				t.Errorf("Apply() = %q, want it to contain %q", err, tc.wantErr)
			case strings.Contains(err.Error(), tgt.CHAPSecret) && tgt.CHAPSecret != "":
				t.Errorf("Apply() = %q shows the secret", err)
			case calls != 0:
				t.Errorf("Apply ran tgtadm %d times", calls)
			}
		})
	}
}

func TestRemoveAndOptionsRefuseBadInput(t *testing.T) {
	tests := map[string]struct {
		opts iscsi.Options
		iqn  string
		want string
	}{
		"IQN with a space":      {iscsi.Options{}, "iqn.2026-01.a:b c", "only [a-z0-9.:-]"},
		"IQN empty":             {iscsi.Options{}, "", "empty"},
		"control port negative": {iscsi.Options{ControlPort: -1}, "iqn.2026-01.a:b", "control port -1"},
		"control port too big":  {iscsi.Options{ControlPort: 32768}, "iqn.2026-01.a:b", "outside 0..32767"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			calls := 0
			tc.opts.TgtadmPath = "/nonexistent/tgtadm"
			d := iscsi.New(tc.opts)
			iscsi.Observe(d, func([]string) { calls++ })
			err := d.Remove(context.Background(), tc.iqn)
			if !errors.Is(err, iscsi.ErrInvalid) || !strings.Contains(err.Error(), tc.want) || calls != 0 {
				t.Errorf("Remove(%q) = %v after %d tgtadm calls, want ErrInvalid containing %q and none", tc.iqn, err, calls, tc.want)
			}
		})
	}
}

func TestTargetNeverFormatsTheSecret(t *testing.T) {
	tgt := iscsi.Target{IQN: "iqn.2026-01.a:b", CHAPUser: "u", CHAPSecret: goodSecret}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		if s := fmt.Sprintf(verb, tgt); strings.Contains(s, goodSecret) {
			t.Errorf("Sprintf(%q) = %q shows the secret", verb, s)
		}
	}
}

func TestStartTgtdRefusesBadOptions(t *testing.T) {
	tests := map[string]struct {
		opts iscsi.Options
		want string
	}{
		"no portal":           {iscsi.Options{ControlPort: 1}, "portal"},
		"portal without port": {iscsi.Options{Portal: "127.0.0.1", ControlPort: 1}, "portal"},
		"port zero":           {iscsi.Options{Portal: "127.0.0.1:0", ControlPort: 1}, "portal"},
		"host name":           {iscsi.Options{Portal: "localhost:3260", ControlPort: 1}, "portal"},
		"control port":        {iscsi.Options{Portal: "127.0.0.1:3260", ControlPort: 40000}, "control port"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tc.opts.TgtdPath = "/nonexistent/tgtd"
			_, err := iscsi.StartTgtd(context.Background(), tc.opts)
			if !errors.Is(err, iscsi.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("StartTgtd = %v, want ErrInvalid about %s", err, tc.want)
			}
		})
	}
}
