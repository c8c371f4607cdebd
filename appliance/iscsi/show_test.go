package iscsi

import (
	"errors"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"testing"
)

// The testdata/show-*.txt files are tgtadm 1.0.85's real output for a
// tgtd holding two targets: one with two sessions (one initiator named
// "odd name alias: x"), an incoming and an outgoing account, address and
// name ACL entries; one offline with only a LUN 2.
func TestParseTargets(t *testing.T) {
	out, err := os.ReadFile("testdata/show-targets.txt")
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseTargets(out)
	if err != nil {
		t.Fatalf("parseTargets: %v", err)
	}
	want := []Status{
		{
			TID: 1, IQN: "iqn.2026-01.cloud.malleable:acme.web-1", State: "ready",
			LUNs:       []LUN{{Number: 1, Type: "disk", Backing: "/tmp/tgtexp/disk.img", Serial: "beaf11"}},
			Accounts:   []string{"acme.web-1"},
			Outgoing:   []string{"mutual"},
			Initiators: []string{"iqn.2026-01.cloud.malleable:node-1", "odd name alias: x"},
			Addresses:  []string{"10.0.0.0/8", "ALL"},
			Sessions: []Session{
				{Nexus: 1, Initiator: "iqn.2026-01.cloud.malleable:node-1", Addresses: []string{"127.0.0.1"}},
				{Nexus: 2, Initiator: "odd name alias: x", Addresses: []string{"127.0.0.1"}},
			},
		},
		{
			TID: 3, IQN: "iqn.2026-01.cloud.malleable:acme.db-2", State: "offline",
			LUNs: []LUN{{Number: 2, Type: "disk", Backing: "/tmp/tgtexp/disk.img", Serial: "beaf32"}},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseTargets:\n got %+v\nwant %+v", got, want)
	}
}

func TestParseTargetsRejectsGarbage(t *testing.T) {
	tests := map[string]string{
		"no header":    "    LUN information:\n",
		"bad tid":      "Target x: iqn.2026-01.a:b\n",
		"zero tid":     "Target 0: iqn.2026-01.a:b\n",
		"no separator": "Target 1 iqn.2026-01.a:b\n",
		"bad lun":      "Target 1: iqn.2026-01.a:b\n    LUN information:\n        LUN: one\n",
		"bad nexus":    "Target 1: iqn.2026-01.a:b\n    I_T nexus information:\n        I_T nexus: ?\n",
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			if got, err := parseTargets([]byte(in)); err == nil {
				t.Errorf("parseTargets(%q) = %+v, want an error", in, got)
			}
		})
	}
	if got, err := parseTargets(nil); err != nil || len(got) != 0 {
		t.Errorf("parseTargets(empty) = %v, %v; want nothing", got, err)
	}
}

func TestParseAccountsAndPortals(t *testing.T) {
	out, err := os.ReadFile("testdata/show-accounts.txt")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := parseAccounts(out), []string{"stray", "mutual", "acme.web-1"}; !slices.Equal(got, want) {
		t.Errorf("parseAccounts = %q, want %q", got, want)
	}
	out, err = os.ReadFile("testdata/show-portals.txt")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:13280")}
	if got := parsePortals(out); !slices.Equal(got, want) {
		t.Errorf("parsePortals = %v, want %v", got, want)
	}
	// What a tgtd that lost its portal to another process listens on.
	fallback := []byte("Portal: [::]:3260,1\nPortal: 0.0.0.0:3260,1\n")
	if got := parsePortals(fallback); len(got) != 2 || got[0].Port() != 3260 {
		t.Errorf("parsePortals(fallback) = %v", got)
	}
}

// The messages are tgtadm 1.0.85's, as seen when running it (README.md).
func TestKindOf(t *testing.T) {
	tests := map[string]struct {
		code int
		msg  string
		want error
	}{
		"no target":          {22, "tgtadm: can't find the target", ErrNotFound},
		"no account":         {22, "tgtadm: can't find the account", ErrNotFound},
		"no lun":             {22, "tgtadm: can't find the logical unit", ErrNotFound},
		"no acl":             {22, "tgtadm: this access control rule does not exist", ErrNotFound},
		"target exists":      {22, "tgtadm: this target already exists", ErrExists},
		"lun exists":         {22, "tgtadm: this logical unit number already exists", ErrExists},
		"account exists":     {22, "tgtadm: this account already exists", ErrExists},
		"acl exists":         {22, "tgtadm: this access control rule already exists", ErrExists},
		"target active":      {22, "tgtadm: this target is still active", ErrBusy},
		"lun active":         {22, "tgtadm: this logical unit is still active", ErrBusy},
		"no daemon":          {107, "tgtadm: failed to send request hdr to tgt daemon, Transport endpoint is not connected", ErrNoDaemon},
		"refused":            {111, "", ErrNoDaemon},
		"invalid request":    {22, "tgtadm: invalid request", nil},
		"usage":              {22, "-t argument value 'abc' invalid", nil},
		"unknown op":         {1, "tgtadm: unknown operation: bogus", nil},
		"not found, exit 1":  {1, "tgtadm: can't find the target", nil},
		"exists, other exit": {2, "tgtadm: this target already exists", nil},
	}
	sentinels := []error{ErrNotFound, ErrExists, ErrBusy, ErrNoDaemon}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := &TgtadmError{Op: "x", ExitCode: tc.code, Message: tc.msg, kind: kindOf(tc.code, tc.msg)}
			for _, s := range sentinels {
				if got := errors.Is(err, s); got != (s == tc.want) {
					t.Errorf("errors.Is(%v, %v) = %v", err, s, got)
				}
			}
		})
	}
}

func TestRedact(t *testing.T) {
	argv := []string{"-C", "1", "--mode", "account", "--op", "new", "--user", "u", "--password", "Secret-12345"}
	got := redact(argv)
	if slices.Contains(got, "Secret-12345") || !slices.Contains(argv, "Secret-12345") {
		t.Errorf("redact(%q) = %q", argv, got)
	}
}
