package server_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/iscsi/iscsitest"
	"github.com/malleable-cloud/malleable/appliance/m2"
)

// TestTargetAccess proves, with libiscsi's tools against a real tgtd, that
// a disk made by create_disk is a target that admits exactly the node it is
// attached to, with the CHAP account of that node's boot script, and that
// it serves the golden image's size and content.
func TestTargetAccess(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "")
	img, sum := e.importImage("golden", imageSize, "M2-ACCESS")
	web := e.createDisk("acme", "web", "golden")
	db := e.createDisk("acme", "db", "golden")

	portal := e.tgtd.Portal().String()
	wantTarget := m2.Target{Portal: portal, IQN: iqnPrefix + ":acme.web", LUN: 1, CHAPUser: web.Target.CHAPUser}
	if web.Target != wantTarget || web.Source != "image:golden" || web.Size != imageSize || web.Node != "" {
		t.Fatalf("created disk = %+v, want target %+v, source image:golden, size %d, no node", web, wantTarget, imageSize)
	}
	if web.Target.CHAPUser == db.Target.CHAPUser {
		t.Fatalf("disks web and db share the CHAP account %q", web.Target.CHAPUser)
	}

	// A disk nobody is attached to admits nobody, even with its CHAP
	// account's secret (which only the secret store knows yet).
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	_, err := iscsitest.Inquiry(ctx, iscsitest.Login{Portal: e.tgtd.Portal(), Target: web.Target.IQN,
		Initiator: e.backend.InitiatorIQN("n1"), User: web.Target.CHAPUser, Secret: e.storedSecret(web.Target.CHAPUser)})
	if !errors.Is(err, iscsitest.ErrRefused) {
		t.Fatalf("login to a detached disk: %v, want %v", err, iscsitest.ErrRefused)
	}

	a, webBoot := e.attach("acme", "web", "n1")
	_, dbBoot := e.attach("acme", "db", "n2")
	wantURI := fmt.Sprintf("iscsi:%s::%d:1:%s", e.tgtd.Portal().Addr(), e.tgtd.Portal().Port(), web.Target.IQN)
	if a.Initiator != e.backend.InitiatorIQN("n1") || webBoot.initiator != a.Initiator ||
		webBoot.user != web.Target.CHAPUser || webBoot.uri != wantURI {
		t.Fatalf("attachment %+v, boot script %+v; want initiator %s, user %s, sanboot %s",
			a, webBoot, e.backend.InitiatorIQN("n1"), web.Target.CHAPUser, wantURI)
	}
	if len(webBoot.secret) < 12 || webBoot.secret == dbBoot.secret {
		t.Fatalf("CHAP secrets %q and %q: want distinct, at least 12 characters", webBoot.secret, dbBoot.secret)
	}
	var got m2.Disk
	e.must(http.StatusOK, http.MethodGet, "/m2/v1/projects/acme/disks/web", "project:acme", nil, &got)
	if got.Node != "n1" || got.Target.Initiator != a.Initiator {
		t.Fatalf("attached disk = %+v, want node n1 and initiator %s", got, a.Initiator)
	}
	_, owner := e.do(http.MethodGet, "/m2/v1/projects/acme/disks/web/boot.ipxe", "project:acme", nil)
	if s := parseBootScript(t, string(owner)); s != webBoot {
		t.Fatalf("owner's boot script %+v differs from the token's %+v", s, webBoot)
	}

	t.Run("discovery", func(t *testing.T) {
		tests := map[string]struct {
			login iscsitest.Login
			want  []string // IQNs listed, each with LUN 1
		}{
			"node n1 sees web": {login: e.login("", webBoot), want: []string{web.Target.IQN}},
			"node n2 sees db":  {login: e.login("", dbBoot), want: []string{db.Target.IQN}},
			"unknown initiator sees nothing": {
				login: iscsitest.Login{Portal: e.tgtd.Portal(), Initiator: e.backend.InitiatorIQN("n9"), User: webBoot.user, Secret: webBoot.secret},
			},
		}
		for name, tc := range tests {
			t.Run(name, func(t *testing.T) {
				found, err := iscsitest.Discover(ctx, tc.login)
				if err != nil {
					t.Fatalf("iscsi-ls: %v", err)
				}
				var iqns []string
				for _, f := range found {
					iqns = append(iqns, f.IQN)
					// LUN 0 is tgtd's controller; the disk is LUN 1, alone.
					disks := slices.DeleteFunc(slices.Clone(f.LUNs), func(l string) bool { return strings.HasPrefix(l, "Lun:0 ") })
					if !strings.HasPrefix(f.Portal, portal+",") || len(disks) != 1 ||
						!strings.HasPrefix(disks[0], "Lun:1 ") || !strings.Contains(disks[0], "DIRECT_ACCESS") {
						t.Errorf("target %s: portal %q, LUNs %q; want %s and one disk, LUN 1", f.IQN, f.Portal, f.LUNs, portal)
					}
				}
				if !slices.Equal(iqns, tc.want) {
					t.Fatalf("iscsi-ls lists %q, want %q", iqns, tc.want)
				}
			})
		}
	})

	t.Run("login", func(t *testing.T) {
		other := e.login(web.Target.IQN, webBoot)
		other.Initiator = e.backend.InitiatorIQN("n9")
		tests := map[string]struct {
			login   iscsitest.Login
			wantErr error
		}{
			"boot script's credentials": {login: e.login(web.Target.IQN, webBoot)},
			"wrong secret": {login: with(e.login(web.Target.IQN, webBoot), func(l *iscsitest.Login) { l.Secret = "WrongSecret1234" }),
				wantErr: iscsitest.ErrAuth},
			"secret one character short": {login: with(e.login(web.Target.IQN, webBoot), func(l *iscsitest.Login) { l.Secret = l.Secret[:len(l.Secret)-1] }),
				wantErr: iscsitest.ErrAuth},
			"another disk's account": {login: with(e.login(web.Target.IQN, webBoot), func(l *iscsitest.Login) { l.User, l.Secret = dbBoot.user, dbBoot.secret }),
				wantErr: iscsitest.ErrAuth},
			"no CHAP": {login: with(e.login(web.Target.IQN, webBoot), func(l *iscsitest.Login) { l.User, l.Secret = "", "" }),
				wantErr: iscsitest.ErrAuth},
			"initiator outside the ACL": {login: other, wantErr: iscsitest.ErrRefused},
			"another attached node": {login: with(e.login(web.Target.IQN, webBoot), func(l *iscsitest.Login) { l.Initiator = dbBoot.initiator }),
				wantErr: iscsitest.ErrRefused},
		}
		for name, tc := range tests {
			t.Run(name, func(t *testing.T) {
				out, err := iscsitest.Inquiry(ctx, tc.login)
				if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
					t.Fatalf("iscsi-inq: %v, want %v", err, tc.wantErr)
				}
				if err == nil && !strings.Contains(out, "Peripheral Device Type:0") && !strings.Contains(out, "DIRECT_ACCESS") {
					t.Errorf("iscsi-inq does not show a disk:\n%s", out)
				}
				size, err := iscsitest.Capacity(ctx, tc.login)
				if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
					t.Fatalf("iscsi-readcapacity16: %v, want %v", err, tc.wantErr)
				}
				if err == nil && size != img.Size {
					t.Fatalf("capacity %d, want the image's %d", size, img.Size)
				}
			})
		}
	})

	t.Run("content", func(t *testing.T) {
		if got := readLUN(t, e.login(web.Target.IQN, webBoot)); got != sum || got != img.SHA256 {
			t.Fatalf("LUN sha256 %s, want the golden image's %s (API says %s)", got, sum, img.SHA256)
		}
		err := iscsitest.ReadLUN(ctx, with(e.login(web.Target.IQN, webBoot), func(l *iscsitest.Login) { l.Secret = "WrongSecret1234" }),
			t.TempDir()+"/lun.raw")
		if !errors.Is(err, iscsitest.ErrAuth) {
			t.Fatalf("qemu-img with a wrong secret: %v, want %v", err, iscsitest.ErrAuth)
		}
	})
}

// with returns l changed by f.
func with(l iscsitest.Login, f func(*iscsitest.Login)) iscsitest.Login {
	f(&l)
	return l
}

// TestDetachDropsSessions is the case of a node still logged in when its
// disk is detached (a handover's unbind): after the detach it must not
// keep reading or writing it.
func TestDetachDropsSessions(t *testing.T) {
	t.Parallel()
	iscsitest.Require(t, "iscsi-perf")
	e := newEnv(t, "")
	e.importImage("golden", imageSize, "M2-DETACH")
	d := e.createDisk("acme", "web", "golden")
	_, boot := e.attach("acme", "web", "n1")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	stop, err := iscsitest.Hold(ctx, e.login(d.Target.IQN, boot))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	for len(targetsByIQN(t, e.tgtd.Driver())[d.Target.IQN].Sessions) == 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("iscsi-perf never logged in: %v", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	e.must(http.StatusNoContent, http.MethodPost, "/m2/v1/projects/acme/disks/web/detach", "project:acme", nil, nil)
	if s := targetsByIQN(t, e.tgtd.Driver())[d.Target.IQN].Sessions; len(s) != 0 {
		t.Fatalf("sessions after detach: %+v, want none", s)
	}
}
