package server_test

import (
	"context"
	"database/sql"
	"errors"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/iscsi"
	"github.com/malleable-cloud/malleable/appliance/iscsi/iscsitest"
	"github.com/malleable-cloud/malleable/appliance/m2"
	"github.com/malleable-cloud/malleable/appliance/storage"
)

// restartFixture is a backend with three disks (two attached) whose
// backend and tgtd have been stopped, and a new tgtd started on the same
// portal and control port, not yet reconciled.
type restartFixture struct {
	e               *env
	sum             string
	web, db         bootScript
	webToken        string
	cache           m2.Disk
	before          map[string]iscsi.Status
	foreign         string // a backing file nobody's disk
	webIQN, dbIQN   string
	cacheIQN, stray string
	squatterNode    string
}

func newRestartFixture(t *testing.T) *restartFixture {
	t.Helper()
	f := &restartFixture{
		e:      newEnv(t, ""),
		webIQN: iqnPrefix + ":acme.web", dbIQN: iqnPrefix + ":acme.db", cacheIQN: iqnPrefix + ":beta.cache",
		stray: iqnPrefix + ":stray.x", squatterNode: iqnPrefix + ":node.n9",
	}
	e := f.e
	_, f.sum = e.importImage("golden", imageSize, "M2-RESTART")
	e.createDisk("acme", "web", "golden")
	e.createDisk("acme", "db", "golden")
	f.cache = e.createDisk("beta", "cache", "golden")
	var a m2.Attachment
	a, f.web = e.attach("acme", "web", "n1")
	f.webToken = a.BootToken
	_, f.db = e.attach("acme", "db", "n2")
	f.before = targetsByIQN(t, e.tgtd.Driver())

	e.close()
	portal, control := e.tgtd.Portal(), e.tgtd.ControlPort()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := e.tgtd.Stop(ctx); err != nil {
		t.Fatalf("stop tgtd: %v", err)
	}
	e.tgtd = iscsitest.Start(t, iscsitest.Options{Portal: portal, ControlPort: control})
	if got := targetsByIQN(t, e.tgtd.Driver()); len(got) != 0 {
		t.Fatalf("a new tgtd holds targets %v", slices.Collect(maps.Keys(got)))
	}
	f.foreign = filepath.Join(t.TempDir(), "foreign.img")
	if err := os.WriteFile(f.foreign, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestRestartRecreatesTargets proves that tgtd's volatile state is rebuilt
// from the backend's metadata: after the backend and tgtd stop, a new tgtd
// on the same portal and control port and server.Open on the same database,
// storage and secrets bring every target back with its IQN, LUN 1, backing
// file, serial, ACL and working CHAP account; a stray target is removed,
// and a target someone made under a disk's IQN (another file, another
// initiator, no CHAP at all) is corrected.
func TestRestartRecreatesTargets(t *testing.T) {
	t.Parallel()
	f := newRestartFixture(t)
	e := f.e
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	if err := e.tgtd.Driver().Apply(ctx, iscsi.Target{IQN: f.stray, Backing: f.foreign,
		CHAPUser: "stray", CHAPSecret: "StraySecret1234", Initiators: []string{f.web.initiator}}); err != nil {
		t.Fatalf("make a stray target: %v", err)
	}
	// The driver never makes a target without CHAP; tgtadm does.
	tgtadm(t, e.tgtd.ControlPort(), "--mode", "target", "--op", "new", "--tid", "7", "--targetname", f.dbIQN)
	tgtadm(t, e.tgtd.ControlPort(), "--mode", "logicalunit", "--op", "new", "--tid", "7", "--lun", "1", "--backing-store", f.foreign)
	tgtadm(t, e.tgtd.ControlPort(), "--mode", "target", "--op", "bind", "--tid", "7", "--initiator-name", f.squatterNode)
	squatter := iscsitest.Login{Portal: e.tgtd.Portal(), Target: f.dbIQN, Initiator: f.squatterNode}
	if _, err := iscsitest.Inquiry(ctx, squatter); err != nil {
		t.Fatalf("the squatter's target does not admit it before the restart: %v", err)
	}

	e.open()
	f.checkTargets(t)
	tests := map[string]struct {
		login   iscsitest.Login
		wantErr error
	}{
		"web with its secret":     {login: e.login(f.webIQN, f.web)},
		"db with its secret":      {login: e.login(f.dbIQN, f.db)},
		"web with a wrong secret": {login: with(e.login(f.webIQN, f.web), func(l *iscsitest.Login) { l.Secret = "WrongSecret1234" }), wantErr: iscsitest.ErrAuth},
		"db as the squatter":      {login: squatter, wantErr: iscsitest.ErrAuth},
		"db as the squatter, with db's CHAP": {login: with(e.login(f.dbIQN, f.db), func(l *iscsitest.Login) { l.Initiator = f.squatterNode }),
			wantErr: iscsitest.ErrRefused},
		"cache, attached to none": {login: iscsitest.Login{Portal: e.tgtd.Portal(), Target: f.cacheIQN, Initiator: f.web.initiator,
			User: f.cache.Target.CHAPUser, Secret: e.storedSecret(f.cache.Target.CHAPUser)}, wantErr: iscsitest.ErrRefused},
		"stray target": {login: iscsitest.Login{Portal: e.tgtd.Portal(), Target: f.stray, Initiator: f.web.initiator, User: "stray", Secret: "StraySecret1234"},
			wantErr: iscsitest.ErrRefused},
		"web with the stray's account": {login: with(e.login(f.webIQN, f.web), func(l *iscsitest.Login) { l.User, l.Secret = "stray", "StraySecret1234" }),
			wantErr: iscsitest.ErrAuth},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := iscsitest.Inquiry(ctx, tc.login)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("iscsi-inq: %v, want %v", err, tc.wantErr)
			}
		})
	}

	// The node boots as before: the same token, the same script, the data.
	status, script := e.do(http.MethodGet, "/m2/v1/boot/"+f.webToken, "", nil)
	if status != http.StatusOK || parseBootScript(t, string(script)) != f.web {
		t.Fatalf("boot script after restart: status %d, %s; want the one before", status, script)
	}
	if got := readLUN(t, e.login(f.dbIQN, f.db)); got != f.sum {
		t.Fatalf("db after restart: sha256 %s, want %s", got, f.sum)
	}
}

// TestRestartReplacesForeignAccount is the case of a target someone made
// under a disk's IQN with a CHAP account of their own bound to it.
func TestRestartReplacesForeignAccount(t *testing.T) {
	t.Parallel()
	f := newRestartFixture(t)
	e := f.e
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	if err := e.tgtd.Driver().Apply(ctx, iscsi.Target{IQN: f.dbIQN, Backing: f.foreign,
		CHAPUser: "squatter", CHAPSecret: "Squatter123456", Initiators: []string{f.squatterNode}}); err != nil {
		t.Fatalf("make the squatter's target: %v", err)
	}
	e.open()
	f.checkTargets(t)
	squatter := iscsitest.Login{Portal: e.tgtd.Portal(), Target: f.dbIQN, Initiator: f.squatterNode, User: "squatter", Secret: "Squatter123456"}
	if _, err := iscsitest.Inquiry(ctx, squatter); !errors.Is(err, iscsitest.ErrRefused) {
		t.Fatalf("the squatter after the restart: %v, want %v", err, iscsitest.ErrRefused)
	}
	if _, err := iscsitest.Inquiry(ctx, e.login(f.dbIQN, f.db)); err != nil {
		t.Fatalf("db with its secret after the restart: %v", err)
	}
}

// checkTargets checks that tgtd holds exactly the disks' targets, as they
// were before the restart.
func (f *restartFixture) checkTargets(t *testing.T) {
	t.Helper()
	after := targetsByIQN(t, f.e.tgtd.Driver())
	if got, want := slices.Sorted(maps.Keys(after)), []string{f.dbIQN, f.webIQN, f.cacheIQN}; !slices.Equal(got, want) {
		t.Fatalf("targets after restart: %q, want %q", got, want)
	}
	for iqn, b := range f.before {
		a := after[iqn]
		if len(a.LUNs) != 1 || a.LUNs[0].Number != 1 || a.LUNs[0].Backing != b.LUNs[0].Backing || a.LUNs[0].Serial != b.LUNs[0].Serial ||
			!slices.Equal(a.Accounts, b.Accounts) || !slices.Equal(a.Initiators, b.Initiators) || len(a.Addresses) != 0 || a.State != "ready" {
			t.Errorf("target %s after restart:\n %+v\nbefore:\n %+v", iqn, a, b)
		}
	}
}

// targetsByIQN lists tgtd's targets by IQN.
func targetsByIQN(tb testing.TB, d *iscsi.Driver) map[string]iscsi.Status {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ts, err := d.List(ctx)
	if err != nil {
		tb.Fatalf("list targets: %v", err)
	}
	out := make(map[string]iscsi.Status, len(ts))
	for _, t := range ts {
		out[t.IQN] = t
	}
	return out
}

// tgtadm runs tgtadm on tgtd's control port, for what the driver refuses
// to do.
func tgtadm(tb testing.TB, port int, args ...string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	argv := append([]string{"-C", strconv.Itoa(port), "--lld", "iscsi"}, args...)
	if out, err := exec.CommandContext(ctx, "tgtadm", argv...).CombinedOutput(); err != nil {
		tb.Fatalf("tgtadm %q: %v: %s", argv, err, out)
	}
}

// TestOpenRemovesHalfMadeVolumes proves crash recovery: rows a crash left
// in state 'creating' go at Open, with the volumes they may have
// published, so their names are free again and no volume is orphaned.
func TestOpenRemovesHalfMadeVolumes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "")
	e.importImage("golden", imageSize, "M2-CRASH")
	e.createDisk("acme", "web", "golden")
	before := e.inventory()
	e.close()

	// What a crash between "write the intent" and "mark it ready" leaves.
	vols, err := storage.NewFile(filepath.Join(e.dir, "volumes"), storage.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, name := range []string{"disks/d99", "images/half", "snapshots/s99"} {
		if _, err := vols.Import(ctx, name, strings.NewReader("half-made"), -1); err != nil {
			t.Fatal(err)
		}
	}
	vols.Close()
	db, err := sql.Open("sqlite", filepath.Join(e.dir, "m2.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO disks (id, project, name, source, state, created_at) VALUES (99, 'acme', 'half', 'image:golden', 'creating', 0)`,
		`INSERT INTO images (name, state, created_at) VALUES ('half', 'creating', 0)`,
		`INSERT INTO snapshots (id, project, name, disk, state, created_at) VALUES (99, 'acme', 'half', 'web', 'creating', 0)`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()

	e.open()
	if after := e.inventory(); !slices.Equal(after.volumes, before.volumes) || !slices.Equal(after.targets, before.targets) {
		t.Fatalf("after Open: %+v, want %+v", after, before)
	}
	// The names are free again.
	e.importImage("half", imageSize, "M2-CRASH-2")
	e.createDisk("acme", "half", "golden")
	e.must(http.StatusCreated, http.MethodPost, "/m2/v1/projects/acme/disks/web/snapshots", "project:acme", map[string]string{"name": "half"}, nil)
}
