package iscsi_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/iscsi"
	"github.com/malleable-cloud/malleable/appliance/iscsi/iscsitest"
)

const (
	lunSize = 64 << 20
	node1   = "iqn.2026-01.cloud.malleable:node-1"
	node2   = "iqn.2026-01.cloud.malleable:node-2"
)

// testContext bounds a test that talks to tgtd and initiators; each
// tgtadm call is bounded by the Driver's own timeout.
func testContext(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(tb.Context(), 2*time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

// counter counts tgtadm calls and remembers their operations.
type counter struct {
	mu  sync.Mutex
	ops []string
}

func (c *counter) observe(args []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var mode, op string
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "--mode":
			mode = args[i+1]
		case "--op":
			op = args[i+1]
		}
	}
	c.ops = append(c.ops, mode+" "+op)
}

func (c *counter) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	ops := c.ops
	c.ops = nil
	return ops
}

// fixture is a running tgtd, a Driver for it that counts its tgtadm calls,
// and one target with its backing file.
type fixture struct {
	tgtd   *iscsi.Tgtd
	d      *iscsi.Driver
	calls  *counter
	target iscsi.Target
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	iscsitest.Require(t, "tgtd", "tgtadm", "iscsi-ls", "iscsi-inq", "iscsi-readcapacity16", "qemu-img", "iscsi-perf")
	f := &fixture{tgtd: iscsitest.Start(t, iscsitest.Options{}), calls: &counter{}}
	f.d = f.tgtd.Driver()
	iscsi.Observe(f.d, f.calls.observe)
	name := strings.ToLower(strings.NewReplacer("/", ".", "_", "-").Replace(t.Name()))
	f.target = iscsi.Target{
		IQN:        "iqn.2026-01.cloud.malleable:" + name,
		Backing:    iscsitest.Backing(t, lunSize),
		CHAPUser:   "user-" + strconv.Itoa(f.tgtd.ControlPort()),
		CHAPSecret: "Secret-0123456",
		Initiators: []string{node1},
	}
	return f
}

func (f *fixture) login(initiator, secret string) iscsitest.Login {
	return iscsitest.Login{
		Portal: f.tgtd.Portal(), Target: f.target.IQN, Initiator: initiator,
		User: f.target.CHAPUser, Secret: secret,
	}
}

// canLogIn proves a full login with a standard INQUIRY.
func canLogIn(t *testing.T, ctx context.Context, l iscsitest.Login) {
	t.Helper()
	if _, err := iscsitest.Inquiry(ctx, l); err != nil {
		t.Errorf("login as %s: %v", l.Initiator, err)
	}
}

// refused checks that a login fails for the given reason.
func refused(t *testing.T, ctx context.Context, l iscsitest.Login, want error) {
	t.Helper()
	_, err := iscsitest.Inquiry(ctx, l)
	if !errors.Is(err, want) {
		t.Errorf("login as %s = %v, want %v", l.Initiator, err, want)
	}
}

func TestApplyServesTheDiskWithCHAPAndACL(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testContext(t)
	if err := f.d.Apply(ctx, f.target); err != nil {
		t.Fatalf("Apply: %v", err)
	}

	t.Run("listed", func(t *testing.T) {
		got, err := f.d.List(ctx)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		if len(got) != 1 {
			t.Fatalf("List = %+v, want one target", got)
		}
		s := got[0]
		if s.TID != 1 || s.IQN != f.target.IQN || s.State != "ready" ||
			len(s.LUNs) != 1 || s.LUNs[0].Number != 1 || s.LUNs[0].Backing != f.target.Backing || s.LUNs[0].Type != "disk" ||
			!slices.Equal(s.Accounts, []string{f.target.CHAPUser}) || len(s.Outgoing) != 0 ||
			!slices.Equal(s.Initiators, []string{node1}) || len(s.Addresses) != 0 {
			t.Errorf("List = %+v", s)
		}
	})

	t.Run("discovery", func(t *testing.T) {
		found, err := iscsitest.Discover(ctx, f.login(node1, f.target.CHAPSecret))
		if err != nil {
			t.Fatalf("iscsi-ls -s: %v", err)
		}
		if len(found) != 1 || found[0].IQN != f.target.IQN || len(found[0].LUNs) != 2 ||
			!strings.HasPrefix(found[0].LUNs[1], "Lun:1") || !strings.Contains(found[0].LUNs[1], "DIRECT_ACCESS") {
			t.Errorf("iscsi-ls -s = %+v, want the target with LUN 0 (controller) and LUN 1 (disk)", found)
		}
		// tgtd does not even show the target to an initiator outside the ACL.
		found, err = iscsitest.Discover(ctx, f.login(node2, f.target.CHAPSecret))
		if err != nil || len(found) != 0 {
			t.Errorf("iscsi-ls as %s = %+v, %v; want nothing", node2, found, err)
		}
	})

	t.Run("inquiry and capacity", func(t *testing.T) {
		out, err := iscsitest.Inquiry(ctx, f.login(node1, f.target.CHAPSecret))
		if err != nil || !strings.Contains(out, "DIRECT_ACCESS") {
			t.Errorf("iscsi-inq = %q, %v", out, err)
		}
		size, err := iscsitest.Capacity(ctx, f.login(node1, f.target.CHAPSecret))
		if err != nil || size != lunSize {
			t.Errorf("iscsi-readcapacity16 = %d, %v; want %d", size, err, lunSize)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		refused(t, ctx, f.login(node1, "Wrong-0123456"), iscsitest.ErrAuth)
		refused(t, ctx, f.login(node1, ""), iscsitest.ErrAuth)
		refused(t, ctx, f.login(node2, f.target.CHAPSecret), iscsitest.ErrRefused)
		refused(t, ctx, f.login("", f.target.CHAPSecret), iscsitest.ErrRefused)
	})

	t.Run("data", func(t *testing.T) {
		dst := filepath.Join(t.TempDir(), "read.img")
		if err := iscsitest.ReadLUN(ctx, f.login(node1, f.target.CHAPSecret), dst); err != nil {
			t.Fatalf("read the LUN: %v", err)
		}
		if got, want := iscsitest.SHA256(t, dst), iscsitest.SHA256(t, f.target.Backing); got != want {
			t.Errorf("SHA-256 of the LUN = %s, of the backing file %s", got, want)
		}
		err := iscsitest.ReadLUN(ctx, f.login(node1, "Wrong-0123456"), filepath.Join(t.TempDir(), "x.img"))
		if !errors.Is(err, iscsitest.ErrAuth) {
			t.Errorf("qemu-img with a wrong secret = %v, want ErrAuth", err)
		}
	})
}

func TestApplyIsIdempotentAndRotates(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testContext(t)
	if err := f.d.Apply(ctx, f.target); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	f.calls.take()

	t.Run("again changes nothing", func(t *testing.T) {
		if err := f.d.Apply(ctx, f.target); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		if ops := f.calls.take(); !slices.Equal(ops, []string{"target show", "account show"}) {
			t.Errorf("second Apply ran %q, want only the two listings", ops)
		}
		canLogIn(t, ctx, f.login(node1, f.target.CHAPSecret))
	})

	t.Run("secret rotation", func(t *testing.T) {
		old := f.target.CHAPSecret
		f.target.CHAPSecret = "Rotated-987654"
		if err := f.d.Apply(ctx, f.target); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		// The ACL is emptied before the account is deleted, and bound again
		// after the new one: never a moment without CHAP.
		want := []string{"target show", "account show", "target unbind", "account delete", "account new", "account bind", "target bind"}
		if ops := f.calls.take(); !slices.Equal(ops, want) {
			t.Errorf("rotation ran %q, want %q", ops, want)
		}
		refused(t, ctx, f.login(node1, old), iscsitest.ErrAuth)
		canLogIn(t, ctx, f.login(node1, f.target.CHAPSecret))
	})

	t.Run("ACL change", func(t *testing.T) {
		f.target.Initiators = []string{node2}
		if err := f.d.Apply(ctx, f.target); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		refused(t, ctx, f.login(node1, f.target.CHAPSecret), iscsitest.ErrRefused)
		canLogIn(t, ctx, f.login(node2, f.target.CHAPSecret))

		f.target.Initiators = nil
		if err := f.d.Apply(ctx, f.target); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		refused(t, ctx, f.login(node2, f.target.CHAPSecret), iscsitest.ErrRefused)

		f.target.Initiators = []string{node2, node1}
		if err := f.d.Apply(ctx, f.target); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		canLogIn(t, ctx, f.login(node1, f.target.CHAPSecret))
		canLogIn(t, ctx, f.login(node2, f.target.CHAPSecret))
	})

	t.Run("new backing", func(t *testing.T) {
		f.target.Backing = iscsitest.Backing(t, 2*lunSize)
		if err := f.d.Apply(ctx, f.target); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		size, err := iscsitest.Capacity(ctx, f.login(node1, f.target.CHAPSecret))
		if err != nil || size != 2*lunSize {
			t.Errorf("capacity = %d, %v; want %d", size, err, 2*lunSize)
		}
	})
}

// TestApplyRepairsForeignChanges corrects a target that someone changed
// behind the driver's back with tgtadm: an address ACL entry (which would
// admit any initiator), an extra LUN, an extra account, an offline state.
func TestApplyRepairsForeignChanges(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testContext(t)
	if err := f.d.Apply(ctx, f.target); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	adm := func(args ...string) {
		t.Helper()
		args = append([]string{"-C", strconv.Itoa(f.tgtd.ControlPort()), "--lld", "iscsi"}, args...)
		if out, err := exec.CommandContext(ctx, "tgtadm", args...).CombinedOutput(); err != nil {
			t.Fatalf("tgtadm %q: %v: %s", args, err, out)
		}
	}
	adm("--mode", "target", "--op", "bind", "--tid", "1", "--initiator-address", "ALL")
	adm("--mode", "logicalunit", "--op", "new", "--tid", "1", "--lun", "2", "--backing-store", f.target.Backing)
	adm("--mode", "account", "--op", "new", "--user", "intruder", "--password", "Intruder-0000")
	adm("--mode", "account", "--op", "bind", "--tid", "1", "--user", "intruder")
	adm("--mode", "target", "--op", "update", "--tid", "1", "--name", "state", "--value", "offline")
	// With ALL bound, tgtd admits an initiator outside the name ACL.
	if err := f.d.Apply(ctx, f.target); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	got, err := f.d.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(got) != 1 || got[0].State != "ready" || len(got[0].LUNs) != 1 || len(got[0].Addresses) != 0 ||
		!slices.Equal(got[0].Accounts, []string{f.target.CHAPUser}) || !slices.Equal(got[0].Initiators, []string{node1}) {
		t.Errorf("after Apply: %+v", got)
	}
	refused(t, ctx, f.login(node2, f.target.CHAPSecret), iscsitest.ErrRefused)
	canLogIn(t, ctx, f.login(node1, f.target.CHAPSecret))

	// An account bound to another target cannot be taken over.
	other := f.target
	other.IQN += ".other"
	if err := f.d.Apply(ctx, other); !errors.Is(err, iscsi.ErrConflict) {
		t.Errorf("Apply with another target's account = %v, want ErrConflict", err)
	}
}

func TestRemoveDisconnectsAndIsIdempotent(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testContext(t)
	if err := f.d.Apply(ctx, f.target); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	// A session with 32 reads in flight: a plain forced delete fails with
	// "this logical unit is still active" under such a load.
	stop, err := iscsitest.Hold(ctx, f.login(node1, f.target.CHAPSecret))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if s := waitSession(t, ctx, f.d, f.target.IQN); s.Initiator != node1 || !slices.Equal(s.Addresses, []string{"127.0.0.1"}) {
		t.Errorf("session = %+v", s)
	}
	if err := f.d.Remove(ctx, f.target.IQN); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if got, err := f.d.List(ctx); err != nil || len(got) != 0 {
		t.Errorf("List after Remove = %+v, %v", got, err)
	}
	if out := accounts(t, ctx, f.tgtd); len(out) != 0 {
		t.Errorf("accounts after Remove = %q", out)
	}
	f.calls.take()
	if err := f.d.Remove(ctx, f.target.IQN); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if ops := f.calls.take(); len(ops) != 2 {
		t.Errorf("second Remove ran %q, want only the listings", ops)
	}
}

// waitSession polls List until the target has a session and returns it.
func waitSession(t *testing.T, ctx context.Context, d *iscsi.Driver, iqn string) iscsi.Session {
	t.Helper()
	for {
		got, err := d.List(ctx)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		for _, s := range got {
			if s.IQN == iqn && len(s.Sessions) > 0 {
				return s.Sessions[0]
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no session on %s: %+v", iqn, got)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// accounts lists tgtd's accounts with tgtadm directly.
func accounts(t *testing.T, ctx context.Context, tgtd *iscsi.Tgtd) []string {
	t.Helper()
	out, err := exec.CommandContext(ctx, "tgtadm", "-C", strconv.Itoa(tgtd.ControlPort()),
		"--lld", "iscsi", "--mode", "account", "--op", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("tgtadm account show: %v: %s", err, out)
	}
	var names []string
	for _, l := range strings.Split(string(out), "\n")[1:] {
		if l = strings.TrimSpace(l); l != "" {
			names = append(names, l)
		}
	}
	return names
}

func TestErrorsFromTgtadm(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testContext(t)

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if err := f.d.Apply(canceled, f.target); !errors.Is(err, context.Canceled) {
		t.Errorf("Apply(canceled) = %v, want context.Canceled", err)
	}
	var te *iscsi.TgtadmError
	if err := f.d.Apply(ctx, f.target); err != nil {
		t.Fatal(err)
	}
	// No tgtd on this control port: tgtadm exits with ENOTCONN.
	port := f.tgtd.ControlPort()
	for {
		port = 1024 + (port+1)%(iscsi.MaxControlPort-1024)
		if _, err := os.Stat("/var/run/tgtd/socket." + strconv.Itoa(port)); errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	none := iscsi.New(iscsi.Options{ControlPort: port, Logger: iscsitest.Logger(t)})
	if _, err := none.List(ctx); !errors.Is(err, iscsi.ErrNoDaemon) || !errors.As(err, &te) || te.ExitCode != 107 {
		t.Errorf("List without tgtd = %v, want ErrNoDaemon with exit 107", err)
	}
}
