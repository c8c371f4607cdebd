// Package bmctest runs real simulated BMCs for tests: one OpenIPMI ipmi_sim
// per BMC, serving IPMI 2.0 (lanplus) on a loopback UDP port, whose chassis
// power is a real, tiny qemu virtual machine. Import it from _test.go files
// only.
package bmctest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/bmc"
)

// RequireRealEnv is the environment variable that, set to 1, turns a missing
// ipmi_sim, qemu or ipmitool into a test failure instead of a skip.
const RequireRealEnv = "MALLEABLE_REQUIRE_REAL"

// Options configures a Sim. The zero value is usable.
type Options struct {
	// User and Password of the BMC's administrator; default "admin" and
	// "malleable". IPMI limits them to 16 and 20 bytes.
	User, Password string
	// LAN is what the BMC reports about its own LAN interface. Zero fields
	// get 127.0.0.1, 255.0.0.0, a MAC derived from the port, and no gateway.
	LAN bmc.LANInfo
	// QEMUArgs are appended to the command line of the machine's qemu, for
	// example a NIC so that `-boot n` (boot device pxe) can really iPXE-boot.
	QEMUArgs []string
}

// Sim is a running simulated BMC and its machine. It is stopped, with its
// qemu, when the test that started it ends. Its methods may be called from
// several goroutines.
type Sim struct {
	Host     string
	Port     int
	User     string
	Password string
	Dir      string      // working directory: lan.conf, chassis.sh, *.log
	LAN      bmc.LANInfo // what the BMC reports through LAN

	opts    Options
	guid    string // of the BMC, random
	pidFile string
	proc    *exec.Cmd
	exited  chan struct{} // closed when ipmi_sim has exited and been reaped
}

// Command is one chassis request the BMC handed to its chassis program, such
// as {Op: "set", Param: "power", Value: "1"}, {Op: "set", Param: "boot",
// Value: "pxe"} or {Op: "get", Param: "power"}. Power on/off are set power
// 1/0; a cycle is set power 0 and, about a second later, set power 1; a hard
// reset is set reset 1 and a soft shutdown set shutdown 1. Boot values are
// ipmi_sim's: pxe, default (disk), cdrom, bios, none.
type Command struct {
	At    time.Time
	Op    string
	Param string
	Value string
}

// PowerOn is one start of the machine, with the boot device it started with.
type PowerOn struct {
	At         time.Time
	BootDevice string // as in Command: pxe, default, cdrom, bios or none
}

// Start runs a simulated BMC for the rest of tb, powered off. It skips the
// test when ipmi_sim or qemu-system-x86_64 is not installed, unless
// MALLEABLE_REQUIRE_REAL=1, in which case the test fails.
func Start(tb testing.TB, opts Options) *Sim {
	tb.Helper()
	ipmiSim := lookTool(tb, "ipmi_sim", "openipmi")
	qemu := lookTool(tb, "qemu-system-x86_64", "qemu-system-x86")
	s := newSim(tb, opts)
	for attempt := 1; ; attempt++ {
		port, err := freeUDPPort()
		if err != nil {
			tb.Fatalf("bmctest: find a free UDP port: %v", err)
		}
		err = s.startOn(port, ipmiSim, qemu)
		if err == nil {
			return s
		}
		// Another process may take the port between our probe and ipmi_sim's bind.
		if errors.Is(err, errPortTaken) && attempt < 5 {
			continue
		}
		tb.Fatalf("bmctest: start ipmi_sim: %v\n%s", err, s.tail("ipmi_sim.log"))
	}
}

// newSim prepares the directory of a Sim and registers its cleanup.
func newSim(tb testing.TB, opts Options) *Sim {
	tb.Helper()
	dir, err := os.MkdirTemp("", "bmcsim-")
	if err != nil {
		tb.Fatalf("bmctest: %v", err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	// ipmi_sim hands the script paths to sh -c unquoted.
	if strings.Trim(dir, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-") != "" {
		tb.Fatalf("bmctest: temporary directory %q has characters ipmi_sim cannot quote; set TMPDIR", dir)
	}
	if err := os.Mkdir(filepath.Join(dir, "state"), 0o700); err != nil {
		tb.Fatalf("bmctest: %v", err)
	}
	s := &Sim{
		Host: "127.0.0.1", User: opts.User, Password: opts.Password, Dir: dir,
		opts: opts, pidFile: filepath.Join(dir, "qemu.pid"),
	}
	if s.User == "" {
		s.User = "admin"
	}
	if s.Password == "" {
		s.Password = "malleable"
	}
	if len(s.User) > 16 || len(s.Password) > 20 || strings.ContainsAny(s.User+s.Password, "\"\\\n") {
		tb.Fatalf("bmctest: user or password too long or with quotes, backslashes or newlines")
	}
	guid := make([]byte, 16)
	rand.Read(guid)
	s.guid = hex.EncodeToString(guid)
	tb.Cleanup(func() { s.stop(tb) })
	return s
}

// startOn configures s for port and launches its ipmi_sim.
func (s *Sim) startOn(port int, ipmiSim, qemu string) error {
	s.Port = port
	s.LAN = s.opts.LAN
	s.fillLAN()
	if err := s.writeFiles(qemu, s.guid, s.opts.QEMUArgs); err != nil {
		return err
	}
	return s.launch(ipmiSim)
}

// Target returns the credentials of s as a bmc.Target.
func (s *Sim) Target() bmc.Target {
	return bmc.Target{Host: s.Host, Port: s.Port, User: s.User, Password: s.Password}
}

// PoweredOn reports the truth at the machine: whether the qemu the BMC
// started is alive (it exists and is not a zombie).
func (s *Sim) PoweredOn() bool {
	pid, ok := s.qemuPID()
	return ok && alive(pid)
}

// WaitPower polls PoweredOn until it equals on or ctx ends.
func (s *Sim) WaitPower(ctx context.Context, on bool) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for s.PoweredOn() != on {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for machine power %v on BMC port %d: %w", on, s.Port, ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}

// Commands returns every chassis command the BMC received except the "get"
// polls (status and boot device reads), oldest first.
func (s *Sim) Commands() []Command {
	var sets []Command
	for _, c := range s.AllCommands() {
		if c.Op != "get" {
			sets = append(sets, c)
		}
	}
	return sets
}

// AllCommands returns every chassis command the BMC received, including the
// "get" polls, oldest first.
func (s *Sim) AllCommands() []Command {
	var cmds []Command
	for _, f := range s.logLines("commands.log") {
		c := Command{At: f.at, Op: f.field(0), Param: f.field(1), Value: f.field(2)}
		cmds = append(cmds, c)
	}
	return cmds
}

// PowerOns returns every start of the machine, oldest first.
func (s *Sim) PowerOns() []PowerOn {
	var ons []PowerOn
	for _, f := range s.logLines("poweron.log") {
		ons = append(ons, PowerOn{At: f.at, BootDevice: f.field(0)})
	}
	return ons
}

// BootDevice returns the boot device the BMC holds now (pxe, default,
// cdrom, bios or none).
func (s *Sim) BootDevice() string {
	b, err := os.ReadFile(filepath.Join(s.Dir, "bootdev"))
	if err != nil {
		return "none"
	}
	return strings.TrimSpace(string(b))
}

// IPMITool runs ipmitool against s (lanplus, cipher suite 3, the password
// passed through the environment) and returns its output. It skips the test
// when ipmitool is missing (or fails under MALLEABLE_REQUIRE_REAL=1), and
// fails it when ipmitool exits non-zero.
func (s *Sim) IPMITool(tb testing.TB, args ...string) string {
	tb.Helper()
	tool := lookTool(tb, "ipmitool", "ipmitool")
	ctx, cancel := context.WithTimeout(tb.Context(), 30*time.Second)
	defer cancel()
	base := []string{"-I", "lanplus", "-C", "3", "-H", s.Host, "-p", strconv.Itoa(s.Port), "-U", s.User, "-E"}
	cmd := exec.CommandContext(ctx, tool, append(base, args...)...)
	cmd.Env = append(os.Environ(), "IPMI_PASSWORD="+s.Password)
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("ipmitool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func lookTool(tb testing.TB, name, debianPackage string) string {
	tb.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	msg := fmt.Sprintf("bmctest: %s not installed (Debian: apt-get install %s)", name, debianPackage)
	if os.Getenv(RequireRealEnv) == "1" {
		tb.Fatalf("%s, and %s=1 requires it", msg, RequireRealEnv)
	}
	tb.Skipf("%s; set %s=1 to fail instead of skipping", msg, RequireRealEnv)
	return ""
}

// fillLAN gives the zero fields of s.LAN their defaults.
func (s *Sim) fillLAN() {
	if !s.LAN.IP.IsValid() {
		s.LAN.IP = netip.MustParseAddr(s.Host)
	}
	if !s.LAN.Netmask.IsValid() {
		s.LAN.Netmask = netip.MustParseAddr("255.0.0.0")
	}
	if len(s.LAN.MAC) == 0 {
		s.LAN.MAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x1b, byte(s.Port >> 8), byte(s.Port)}
	}
}

type logLine struct {
	at     time.Time
	fields []string
}

func (l logLine) field(i int) string {
	if i < len(l.fields) {
		return l.fields[i]
	}
	return ""
}

// logLines parses a log written by chassis.sh: "<unix seconds.microseconds> field...".
func (s *Sim) logLines(name string) []logLine {
	b, err := os.ReadFile(filepath.Join(s.Dir, name))
	if err != nil {
		return nil
	}
	var lines []logLine
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		at, err := parseEpoch(f[0])
		if err != nil {
			continue
		}
		lines = append(lines, logLine{at: at, fields: f[1:]})
	}
	return lines
}

// parseEpoch parses bash's $EPOCHREALTIME, "seconds.microseconds".
func parseEpoch(s string) (time.Time, error) {
	sec, frac, _ := strings.Cut(s, ".")
	if len(frac) > 9 {
		return time.Time{}, fmt.Errorf("bad timestamp %q", s)
	}
	secs, err := strconv.ParseInt(sec, 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	nsecs, err := strconv.ParseInt(frac+strings.Repeat("0", 9-len(frac)), 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(secs, nsecs), nil
}

// tail returns the last lines of a file in the Sim's directory.
func (s *Sim) tail(name string) string {
	b, err := os.ReadFile(filepath.Join(s.Dir, name))
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}
