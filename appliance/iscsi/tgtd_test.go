package iscsi_test

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"

	"github.com/malleable-cloud/malleable/appliance/iscsi"
	"github.com/malleable-cloud/malleable/appliance/iscsi/iscsitest"
)

// TestReconcileAfterRestart stops tgtd with a target and a session, starts
// a new one on the same portal and control port, and rebuilds its state
// with Reconcile through the same Driver, which must notice that its
// accounts are gone. A stray target and account made with tgtadm go.
func TestReconcileAfterRestart(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testContext(t)
	d := iscsi.New(iscsi.Options{ControlPort: f.tgtd.ControlPort(), Logger: iscsitest.Logger(t)})
	want := []iscsi.Target{f.target}
	second := f.target
	second.IQN += ".second"
	second.CHAPUser += "-2"
	second.Backing = iscsitest.Backing(t, lunSize/2)
	want = append(want, second)
	if err := d.Reconcile(ctx, want); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	stop, err := iscsitest.Hold(ctx, f.login(node1, f.target.CHAPSecret))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	waitSession(t, ctx, d, f.target.IQN)

	if err := f.tgtd.Stop(ctx); err != nil {
		t.Fatalf("Stop with a target and a session: %v", err)
	}
	<-f.tgtd.Done()
	for _, p := range []string{"/var/run/tgtd/socket." + strconv.Itoa(f.tgtd.ControlPort()), "/var/run/tgtd/socket." + strconv.Itoa(f.tgtd.ControlPort()) + ".lock"} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after Stop: %v", p, err)
		}
	}
	if _, err := iscsitest.Inquiry(ctx, f.login(node1, f.target.CHAPSecret)); err == nil {
		t.Errorf("login after Stop succeeded")
	}

	restarted := iscsitest.Start(t, iscsitest.Options{Portal: f.tgtd.Portal(), ControlPort: f.tgtd.ControlPort()})
	if got, err := d.List(ctx); err != nil || len(got) != 0 {
		t.Fatalf("List after restart = %+v, %v; want nothing (tgtd state is volatile)", got, err)
	}
	// A stray target (taking TID 1) and a stray account.
	adm := func(args ...string) {
		t.Helper()
		args = append([]string{"-C", strconv.Itoa(restarted.ControlPort()), "--lld", "iscsi"}, args...)
		if out, err := exec.CommandContext(ctx, "tgtadm", args...).CombinedOutput(); err != nil {
			t.Fatalf("tgtadm %q: %v: %s", args, err, out)
		}
	}
	adm("--mode", "target", "--op", "new", "--tid", "1", "--targetname", "iqn.2026-01.cloud.malleable:stray")
	adm("--mode", "target", "--op", "bind", "--tid", "1", "--initiator-address", "ALL")
	adm("--mode", "account", "--op", "new", "--user", "stray", "--password", "Stray-00000000")

	if err := d.Reconcile(ctx, want); err != nil {
		t.Fatalf("Reconcile after restart: %v", err)
	}
	got, err := d.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var iqns []string
	for _, s := range got {
		iqns = append(iqns, s.IQN)
		if len(s.LUNs) != 1 || s.LUNs[0].Number != 1 || len(s.Accounts) != 1 {
			t.Errorf("after Reconcile: %+v", s)
		}
	}
	if !slices.Equal(iqns, []string{f.target.IQN, second.IQN}) {
		t.Errorf("targets after Reconcile = %q", iqns)
	}
	if got := accounts(t, ctx, restarted); len(got) != 2 || slices.Contains(got, "stray") {
		t.Errorf("accounts after Reconcile = %q", got)
	}
	canLogIn(t, ctx, f.login(node1, f.target.CHAPSecret))
	refused(t, ctx, f.login(node1, "Wrong-0123456"), iscsitest.ErrAuth)
	size, err := iscsitest.Capacity(ctx, iscsitest.Login{Portal: restarted.Portal(), Target: second.IQN,
		Initiator: node1, User: second.CHAPUser, Secret: second.CHAPSecret})
	if err != nil || size != lunSize/2 {
		t.Errorf("capacity of the second target = %d, %v", size, err)
	}
	// The LUN's serial number follows the IQN, not the target ID.
	if got[0].LUNs[0].Serial == "" || got[0].LUNs[0].Serial == got[1].LUNs[0].Serial {
		t.Errorf("serials = %q, %q", got[0].LUNs[0].Serial, got[1].LUNs[0].Serial)
	}

	// Reconcile to nothing removes everything, accounts included.
	if err := d.Reconcile(ctx, nil); err != nil {
		t.Fatalf("Reconcile(nil): %v", err)
	}
	if got, err := d.List(ctx); err != nil || len(got) != 0 {
		t.Errorf("List after Reconcile(nil) = %+v, %v", got, err)
	}
	if got := accounts(t, ctx, restarted); len(got) != 0 {
		t.Errorf("accounts after Reconcile(nil) = %q", got)
	}
}

func TestReconcileReportsBadTargetsAndKeepsThem(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testContext(t)
	if err := f.d.Apply(ctx, f.target); err != nil {
		t.Fatal(err)
	}
	// The backing file is briefly missing (its export restarts, say): the
	// target must stay, not be removed as unwanted.
	missing := f.target
	missing.Backing += ".gone"
	dup := f.target
	dup.IQN += ".dup"
	err := f.d.Reconcile(ctx, []iscsi.Target{missing, f.target, dup})
	if !errors.Is(err, iscsi.ErrInvalid) || !errors.Is(err, iscsi.ErrConflict) {
		t.Errorf("Reconcile = %v, want ErrInvalid (missing backing, IQN twice) and ErrConflict (account twice)", err)
	}
	got, lerr := f.d.List(ctx)
	if lerr != nil || len(got) != 1 || got[0].IQN != f.target.IQN || got[0].LUNs[0].Backing != f.target.Backing {
		t.Errorf("List = %+v, %v; want the original target untouched", got, lerr)
	}
}

// TestTwoTgtds answers whether two tgtd can run on one machine: yes, with
// different control ports and portals. The same control port is refused
// (tgtd's lock file), and so is a portal in use, which tgtd would otherwise
// silently replace with 0.0.0.0:3260 and [::]:3260.
func TestTwoTgtds(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testContext(t)
	other := iscsitest.Start(t, iscsitest.Options{})
	g := iscsi.Target{
		IQN: f.target.IQN, Backing: iscsitest.Backing(t, lunSize/4), CHAPUser: f.target.CHAPUser,
		CHAPSecret: "Other-00000000", Initiators: []string{node1},
	}
	if err := f.d.Apply(ctx, f.target); err != nil {
		t.Fatal(err)
	}
	if err := other.Driver().Apply(ctx, g); err != nil {
		t.Fatal(err)
	}
	// The same IQN and account, different disks and secrets, side by side.
	for _, tc := range []struct {
		tgtd   *iscsi.Tgtd
		secret string
		size   int64
	}{{f.tgtd, f.target.CHAPSecret, lunSize}, {other, g.CHAPSecret, lunSize / 4}} {
		l := iscsitest.Login{Portal: tc.tgtd.Portal(), Target: g.IQN, Initiator: node1, User: g.CHAPUser, Secret: tc.secret}
		if size, err := iscsitest.Capacity(ctx, l); err != nil || size != tc.size {
			t.Errorf("capacity on %s = %d, %v; want %d", tc.tgtd.Portal(), size, err, tc.size)
		}
	}

	_, err := iscsi.StartTgtd(ctx, iscsi.Options{Portal: "127.0.0.1:1", ControlPort: f.tgtd.ControlPort(), Logger: iscsitest.Logger(t)})
	if !errors.Is(err, iscsi.ErrControlPortInUse) {
		t.Errorf("StartTgtd on a used control port = %v, want ErrControlPortInUse", err)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := 1024 + (f.tgtd.ControlPort()+other.ControlPort())%(iscsi.MaxControlPort-1024)
	_, err = iscsi.StartTgtd(ctx, iscsi.Options{Portal: l.Addr().String(), ControlPort: port, Logger: iscsitest.Logger(t)})
	if !errors.Is(err, iscsi.ErrPortalInUse) && !errors.Is(err, iscsi.ErrControlPortInUse) {
		t.Errorf("StartTgtd on a used portal = %v, want ErrPortalInUse", err)
	}
}
