package bmctest

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSimStartsAndStopsEverything drives a Sim with ipmitool alone and checks
// that stop leaves neither ipmi_sim nor qemu behind.
func TestSimStartsAndStopsEverything(t *testing.T) {
	s := Start(t, Options{QEMUArgs: []string{"-smp", "1"}})
	if s.PoweredOn() {
		t.Fatal("a new Sim is powered on")
	}
	if out := s.IPMITool(t, "chassis", "power", "on"); !strings.Contains(out, "Up/On") {
		t.Fatalf("ipmitool chassis power on: %q", out)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := s.WaitPower(ctx, true); err != nil {
		t.Fatal(err)
	}
	qemu, ok := s.qemuPID()
	if !ok {
		t.Fatal("powered on without a qemu in the pidfile")
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(qemu) + "/cmdline")
	if err != nil || !strings.Contains(string(cmdline), "\x00-smp\x001\x00") {
		t.Errorf("qemu command line %q lacks the extra arguments (%v)", cmdline, err)
	}
	if got := s.Commands(); len(got) != 1 || got[0].Op != "set" || got[0].Param != "power" || got[0].Value != "1" {
		t.Errorf("Commands() = %+v, want one set power 1", got)
	}
	if ons := s.PowerOns(); len(ons) != 1 || ons[0].BootDevice != "none" {
		t.Errorf("PowerOns() = %+v, want one start with boot device none", ons)
	}

	ipmiSim := s.proc.Process.Pid
	s.stop(t)
	if alive(ipmiSim) {
		t.Errorf("ipmi_sim (pid %d) still alive after stop", ipmiSim)
	}
	if alive(qemu) {
		t.Errorf("qemu (pid %d) still alive after stop", qemu)
	}
	if s.PoweredOn() {
		t.Error("PoweredOn after stop")
	}
	s.stop(t) // Cleanup stops again: must be harmless
}

// TestSharedPortIsRefused checks what Start's retry relies on. ipmi_sim
// binds with SO_REUSEADDR, so a second one on a taken port does not fail:
// launch must notice the shared port, stop its ipmi_sim and say so.
func TestSharedPortIsRefused(t *testing.T) {
	first := Start(t, Options{})
	ipmiSim := lookTool(t, "ipmi_sim", "openipmi")
	qemu := lookTool(t, "qemu-system-x86_64", "qemu-system-x86")
	second := newSim(t, Options{})
	if err := second.startOn(first.Port, ipmiSim, qemu); !errors.Is(err, errPortTaken) {
		t.Fatalf("starting on a taken port: %v, want errPortTaken", err)
	}
	if second.proc != nil {
		t.Error("the refused ipmi_sim was left running")
	}
	if !holdsSocket(first.proc.Process.Pid, udpSocketsOn(first.Port)) {
		t.Error("the first BMC lost its port")
	}
}

func TestParseEpoch(t *testing.T) {
	tests := map[string]struct {
		in      string
		want    time.Time
		wantErr bool
	}{
		"microseconds": {in: "1795627655.940937", want: time.Unix(1795627655, 940937000)},
		"nanoseconds":  {in: "1795627655.000000001", want: time.Unix(1795627655, 1)},
		"no fraction":  {in: "1795627655", want: time.Unix(1795627655, 0)},
		"garbage":      {in: "12:00", wantErr: true},
		"too precise":  {in: "1.0000000001", wantErr: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := parseEpoch(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseEpoch(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if !got.Equal(tt.want) {
				t.Errorf("parseEpoch(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}
