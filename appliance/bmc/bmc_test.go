package bmc_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/bmc"
	"github.com/malleable-cloud/malleable/appliance/bmc/bmctest"
)

// simTimeout is the per-attempt timeout against simulated BMCs. ipmi_sim
// serves one request at a time and forks a shell script for every chassis
// command (tens of ms, a qemu start more); on a loaded 2-core machine a few
// queued requests can approach the 1 s default, and a retried command runs twice.
const simTimeout = 3 * time.Second

func newIPMI(tb testing.TB, opts bmc.Options) *bmc.IPMI {
	opts.Logger = slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	return bmc.New(opts)
}

// testContext bounds a test that talks to simulated BMCs; the operations
// themselves are bounded by the IPMI timeouts.
func testContext(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(tb.Context(), time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

func TestPowerAndBootOnTwoSimulatedBMCs(t *testing.T) {
	t.Parallel()
	lan := bmc.LANInfo{
		IP:      netip.MustParseAddr("10.20.30.40"),
		Netmask: netip.MustParseAddr("255.255.255.0"),
		MAC:     net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0xbb, 0x01},
		Gateway: netip.MustParseAddr("10.20.30.1"),
	}
	sim1 := bmctest.Start(t, bmctest.Options{LAN: lan})
	sim2 := bmctest.Start(t, bmctest.Options{User: "second", Password: "other-secret"})
	c := newIPMI(t, bmc.Options{Timeout: simTimeout})
	ctx := testContext(t)
	t1 := sim1.Target()
	sim1.IPMITool(t, "chassis", "power", "status") // skip here, not midway, without ipmitool

	status := func(t *testing.T, sim *bmctest.Sim) bool {
		t.Helper()
		on, err := c.PowerStatus(ctx, sim.Target())
		if err != nil {
			t.Fatalf("PowerStatus(%s): %v", sim.Target(), err)
		}
		return on
	}
	// expect checks one BMC from all three sides: go-ipmi, ipmitool, and the machine.
	expect := func(t *testing.T, sim *bmctest.Sim, on bool) {
		t.Helper()
		if got := status(t, sim); got != on {
			t.Errorf("PowerStatus(%s) = %v, want %v", sim.Target(), got, on)
		}
		if got := sim.PoweredOn(); got != on {
			t.Errorf("machine of %s powered on = %v, want %v", sim.Target(), got, on)
		}
		want := map[bool]string{true: "Chassis Power is on", false: "Chassis Power is off"}[on]
		if out := sim.IPMITool(t, "chassis", "power", "status"); !strings.Contains(out, want) {
			t.Errorf("ipmitool chassis power status on %s = %q, want %q", sim.Target(), out, want)
		}
	}
	power := func(t *testing.T, action string) {
		t.Helper()
		if err := c.Power(ctx, t1, action); err != nil {
			t.Fatalf("Power(%s, %q): %v", t1, action, err)
		}
	}
	// lastSets returns the last n chassis commands of sim as "param=value".
	lastSets := func(sim *bmctest.Sim, n int) []string {
		var s []string
		for _, c := range sim.Commands() {
			s = append(s, c.Param+"="+c.Value)
		}
		return s[max(0, len(s)-n):]
	}

	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"both start off", func(t *testing.T) {
			expect(t, sim1, false)
			expect(t, sim2, false)
		}},
		{"on powers the machine of BMC 1 only", func(t *testing.T) {
			power(t, "on")
			expect(t, sim1, true)
			if got := lastSets(sim1, 1); !slices.Equal(got, []string{"power=1"}) {
				t.Errorf("BMC 1 commands end with %v, want [power=1]", got)
			}
			expect(t, sim2, false)
			if cmds := sim2.Commands(); len(cmds) != 0 {
				t.Errorf("BMC 2 received %v, want no chassis command", cmds)
			}
		}},
		{"off", func(t *testing.T) {
			power(t, "off")
			expect(t, sim1, false)
		}},
		{"cycle turns the machine off and on again", func(t *testing.T) {
			power(t, "on")
			starts := len(sim1.PowerOns())
			power(t, "cycle")
			// ipmi_sim powers off at once and on again from a 1 s timer.
			if err := sim1.WaitPower(ctx, true); err != nil {
				t.Fatal(err)
			}
			if got := len(sim1.PowerOns()); got != starts+1 {
				t.Errorf("machine started %d times during the cycle, want 1", got-starts)
			}
			if got := lastSets(sim1, 2); !slices.Equal(got, []string{"power=0", "power=1"}) {
				t.Errorf("BMC 1 commands end with %v, want [power=0 power=1]", got)
			}
			expect(t, sim1, true)
		}},
		{"reset restarts the machine", func(t *testing.T) {
			starts := len(sim1.PowerOns())
			power(t, "reset")
			if got := lastSets(sim1, 1); !slices.Equal(got, []string{"reset=1"}) {
				t.Errorf("BMC 1 commands end with %v, want [reset=1]", got)
			}
			if got := len(sim1.PowerOns()); got != starts+1 {
				t.Errorf("machine started %d times during the reset, want 1", got-starts)
			}
			expect(t, sim1, true)
		}},
		{"soft asks the guest to shut down", func(t *testing.T) {
			power(t, "soft")
			if got := lastSets(sim1, 1); !slices.Equal(got, []string{"shutdown=1"}) {
				t.Errorf("BMC 1 commands end with %v, want [shutdown=1]", got)
			}
			// The simulated guest honours the request.
			expect(t, sim1, false)
		}},
		{"boot device pxe reaches the BMC and the next power on", func(t *testing.T) {
			if err := c.SetBootDevice(ctx, t1, "pxe", false); err != nil {
				t.Fatalf("SetBootDevice(pxe): %v", err)
			}
			if got := lastSets(sim1, 1); !slices.Equal(got, []string{"boot=pxe"}) {
				t.Errorf("BMC 1 commands end with %v, want [boot=pxe]", got)
			}
			if out := sim1.IPMITool(t, "chassis", "bootparam", "get", "5"); !strings.Contains(out, "Force PXE") {
				t.Errorf("ipmitool chassis bootparam get 5 = %q, want Force PXE", out)
			}
			power(t, "on")
			ons := sim1.PowerOns()
			if last := ons[len(ons)-1]; last.BootDevice != "pxe" {
				t.Errorf("machine started with boot device %q, want pxe", last.BootDevice)
			}
			power(t, "off")
		}},
		{"boot device disk", func(t *testing.T) {
			if err := c.SetBootDevice(ctx, t1, "disk", true); err != nil {
				t.Fatalf("SetBootDevice(disk): %v", err)
			}
			if got := sim1.BootDevice(); got != "default" {
				t.Errorf("BMC boot device = %q, want default (ipmi_sim's name for disk)", got)
			}
			if out := sim1.IPMITool(t, "chassis", "bootparam", "get", "5"); !strings.Contains(out, "Force Boot from default Hard-Drive") {
				t.Errorf("ipmitool chassis bootparam get 5 = %q, want the hard drive", out)
			}
		}},
		{"LAN", func(t *testing.T) {
			for _, sim := range []*bmctest.Sim{sim1, sim2} {
				got, err := c.LAN(ctx, sim.Target())
				if err != nil {
					t.Fatalf("LAN(%s): %v", sim.Target(), err)
				}
				if fmt.Sprint(got) != fmt.Sprint(sim.LAN) {
					t.Errorf("LAN(%s) = %+v, want %+v", sim.Target(), got, sim.LAN)
				}
			}
		}},
		{"BMC 2 was never touched", func(t *testing.T) {
			if cmds := sim2.Commands(); len(cmds) != 0 {
				t.Errorf("BMC 2 received %v, want no chassis command", cmds)
			}
			expect(t, sim2, false)
		}},
	}
	for _, step := range steps {
		if !t.Run(step.name, step.run) {
			return // later steps build on the state this one left
		}
	}
}

// TestErrors covers the errors that need no BMC. TestAuthErrors has those
// that need one.
func TestErrors(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)

	// A UDP socket that records whatever reaches it and never answers.
	silent, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	silentTarget := bmc.Target{Host: "127.0.0.1", Port: silent.LocalAddr().(*net.UDPAddr).Port, User: "admin", Password: "s3cr3t-pw"}
	closed := bmc.Target{Host: "127.0.0.1", Port: closedUDPPort("127.0.0.1"), User: "admin", Password: "s3cr3t-pw"}
	closed6 := bmc.Target{Host: "::1", Port: closedUDPPort("::1"), User: "admin", Password: "s3cr3t-pw"}

	// A small timeout: the unreachable rows must not take seconds.
	c := newIPMI(t, bmc.Options{Timeout: 200 * time.Millisecond, Retries: -1})
	status := func(t bmc.Target) func() error {
		return func() error { _, err := c.PowerStatus(ctx, t); return err }
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	expired, cancel := context.WithDeadline(ctx, time.Now())
	defer cancel()
	tests := map[string]struct {
		call    func() error
		target  bmc.Target
		want    error
		wantMsg string
	}{
		"caller canceled": {call: func() error { _, err := c.PowerStatus(canceled, silentTarget); return err },
			target: silentTarget, want: context.Canceled},
		"caller deadline passed": {call: func() error { _, err := c.PowerStatus(expired, silentTarget); return err },
			target: silentTarget, want: bmc.ErrUnreachable, wantMsg: "deadline exceeded"},
		"closed port":          {call: status(closed), target: closed, want: bmc.ErrUnreachable},
		"closed port, IPv6":    {call: status(closed6), target: closed6, want: bmc.ErrUnreachable, wantMsg: "connection refused"},
		"no answer":            {call: status(silentTarget), target: silentTarget, want: bmc.ErrUnreachable},
		"unknown power action": {call: func() error { return c.Power(ctx, silentTarget, "explode") }, target: silentTarget, want: bmc.ErrBadArgument, wantMsg: "explode"},
		"unknown boot device":  {call: func() error { return c.SetBootDevice(ctx, silentTarget, "floppy", false) }, target: silentTarget, want: bmc.ErrBadArgument, wantMsg: "floppy"},
		"empty host":           {call: status(bmc.Target{User: "admin"}), want: bmc.ErrBadArgument, wantMsg: "empty host"},
		"port out of range":    {call: status(bmc.Target{Host: "127.0.0.1", Port: 70000}), want: bmc.ErrBadArgument, wantMsg: "70000"},
		"user name too long":   {call: status(bmc.Target{Host: "127.0.0.1", Port: 1, User: strings.Repeat("u", 17)}), want: bmc.ErrBadArgument},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if tt.target.Host != "" && tt.target.Port == 0 {
				t.Skipf("no loopback address %s here", tt.target.Host)
			}
			drain(t, silent)
			err := tt.call()
			checkError(t, err, tt.want, tt.target, tt.wantMsg)
			if n := drain(t, silent); n != 0 && errors.Is(err, bmc.ErrBadArgument) {
				t.Errorf("a bad argument sent %d datagrams, want none", n)
			}
			if tt.want == context.Canceled && errors.Is(err, bmc.ErrUnreachable) {
				t.Errorf("error = %v: a canceled call says nothing about the BMC", err)
			}
		})
	}
}

func TestAuthErrors(t *testing.T) {
	t.Parallel()
	sim := bmctest.Start(t, bmctest.Options{Password: "s3cr3t-pw"})
	ctx := testContext(t)
	c := newIPMI(t, bmc.Options{Timeout: simTimeout})
	wrongPassword, unknownUser := sim.Target(), sim.Target()
	wrongPassword.Password = "wrong-pw"
	unknownUser.User = "nobody"

	for name, target := range map[string]bmc.Target{"wrong password": wrongPassword, "unknown user": unknownUser} {
		t.Run(name, func(t *testing.T) {
			_, err := c.PowerStatus(ctx, target)
			checkError(t, err, bmc.ErrAuth, target, "")
			if err := c.Power(ctx, target, "on"); !errors.Is(err, bmc.ErrAuth) {
				t.Errorf("Power(on) = %v, want ErrAuth", err)
			}
		})
	}
	if cmds := sim.AllCommands(); len(cmds) != 0 {
		t.Errorf("the BMC ran chassis commands %v for rejected logins", cmds)
	}
	if sim.PoweredOn() {
		t.Error("a rejected login powered the machine on")
	}
}

// checkError checks that err matches want, names target (when it has a
// host), contains wantMsg and never the test password.
func checkError(t *testing.T, err, want error, target bmc.Target, wantMsg string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error = %v, want %v", err, want)
	}
	msg := err.Error()
	t.Logf("error: %s", msg)
	if strings.Contains(msg, "s3cr3t-pw") {
		t.Errorf("error %q contains the password", msg)
	}
	if target.Host != "" && !strings.Contains(msg, target.Addr()) {
		t.Errorf("error %q does not name the target %s", msg, target.Addr())
	}
	if !strings.Contains(msg, wantMsg) {
		t.Errorf("error %q does not contain %q", msg, wantMsg)
	}
}

// closedUDPPort returns a UDP port on loopback address host that nothing
// listens on, or 0 when the host has no such address.
func closedUDPPort(host string) int {
	c, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0
	}
	port := c.LocalAddr().(*net.UDPAddr).Port
	c.Close()
	return port
}

// drain counts the datagrams already queued on c, without waiting for more
// (a read deadline in the past fails before looking at the socket).
// Loopback delivery is complete when the sender's write returns.
func drain(t *testing.T, c net.PacketConn) int {
	rc, err := c.(*net.UDPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	for n := 0; ; n++ {
		var recvErr error
		if err := rc.Read(func(fd uintptr) bool {
			_, _, recvErr = syscall.Recvfrom(int(fd), buf, syscall.MSG_DONTWAIT)
			return true
		}); err != nil {
			t.Fatal(err)
		}
		if recvErr != nil {
			return n
		}
	}
}

// TestConcurrentStatus shares one IPMI between goroutines. Its 80 sessions
// also exceed ipmi_sim's 63, so it fails if a session is ever left open.
func TestConcurrentStatus(t *testing.T) {
	t.Parallel()
	sim := bmctest.Start(t, bmctest.Options{})
	c := newIPMI(t, bmc.Options{Timeout: simTimeout})
	ctx := testContext(t)
	if err := c.Power(ctx, sim.Target(), "on"); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 80)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 10 {
				on, err := c.PowerStatus(ctx, sim.Target())
				if err == nil && !on {
					err = errors.New("PowerStatus = off, want on")
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestTargetNeverShowsThePassword(t *testing.T) {
	target := bmc.Target{Host: "10.0.0.5", User: "admin", Password: "hunter2-secret"}
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "target", target)
	tests := map[string]struct {
		got, want string
	}{
		"%v":            {fmt.Sprintf("%v", target), "admin@10.0.0.5:623"},
		"%+v":           {fmt.Sprintf("%+v", target), "admin@10.0.0.5:623"},
		"*Target %v":    {fmt.Sprintf("%v", &target), "admin@10.0.0.5:623"},
		"nested %+v":    {fmt.Sprintf("%+v", struct{ Node bmc.Target }{target}), "{Node:admin@10.0.0.5:623}"},
		"error with %v": {fmt.Errorf("power %v: boom", target).Error(), "power admin@10.0.0.5:623: boom"},
		"%#v":           {fmt.Sprintf("%#v", target), `bmc.Target{Host:"10.0.0.5", Port:0, User:"admin", Password:<redacted>}`},
		"slog":          {logged.String(), `"target":{"addr":"10.0.0.5:623","user":"admin"}`},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if strings.Contains(tt.got, target.Password) {
				t.Errorf("%s shows the password: %s", name, tt.got)
			}
			if !strings.Contains(tt.got, tt.want) {
				t.Errorf("%s = %s, want %s", name, tt.got, tt.want)
			}
		})
	}
}

// BenchmarkPowerStatus measures one whole operation against ipmi_sim:
// open a session, read the chassis status (which runs the Sim's chassis
// script), close the session.
func BenchmarkPowerStatus(b *testing.B) {
	sim := bmctest.Start(b, bmctest.Options{})
	c := bmc.New(bmc.Options{})
	ctx := b.Context()
	for b.Loop() {
		if _, err := c.PowerStatus(ctx, sim.Target()); err != nil {
			b.Fatal(err)
		}
	}
}
