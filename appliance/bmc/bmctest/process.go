package bmctest

// Processes: starting ipmi_sim on a port of its own, and stopping it with
// every qemu it started.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func freeUDPPort() (int, error) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// errPortTaken is returned by launch when another socket has the port.
var errPortTaken = errors.New("the UDP port is taken")

// launch starts ipmi_sim and waits until it alone holds its port and answers
// an RMCP presence ping.
func (s *Sim) launch(ipmiSim string) error {
	logf, err := os.OpenFile(filepath.Join(s.Dir, "ipmi_sim.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(ipmiSim, "-c", "lan.conf", "-f", "bmc.emu", "-s", "state", "-n")
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that stop also kills a chassis.sh in flight;
	// and killed with the test binary should that die without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	s.proc, s.exited = cmd, exited

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		// ipmi_sim binds with SO_REUSEADDR: a second one on the same port
		// binds too, and a pong may come from either. So it must be the
		// only socket on the port.
		inodes := udpSocketsOn(s.Port)
		if holdsSocket(cmd.Process.Pid, inodes) {
			if len(inodes) > 1 {
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-exited
				s.proc = nil
				return errPortTaken
			}
			if pingRMCP(ctx, s.Host, s.Port) {
				return nil
			}
		}
		select {
		case <-exited:
			s.proc = nil
			if strings.Contains(s.tail("ipmi_sim.log"), "Unable to bind") {
				return errPortTaken
			}
			return fmt.Errorf("ipmi_sim exited: %v", cmd.ProcessState)
		case <-ctx.Done():
			return fmt.Errorf("ipmi_sim does not answer on port %d: %w", s.Port, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// udpSocketsOn returns the inodes of the IPv4 UDP sockets bound to port on
// 127.0.0.1 or on any address, from /proc/net/udp.
func udpSocketsOn(port int) []string {
	table, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		return nil
	}
	loopback, wildcard := fmt.Sprintf("0100007F:%04X", port), fmt.Sprintf("00000000:%04X", port)
	var inodes []string
	for _, line := range strings.Split(string(table), "\n") {
		f := strings.Fields(line)
		if len(f) > 9 && (f[1] == loopback || f[1] == wildcard) {
			inodes = append(inodes, f[9])
		}
	}
	return inodes
}

// holdsSocket reports whether process pid has one of the socket inodes open.
func holdsSocket(pid int, inodes []string) bool {
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && slices.Contains(inodes, strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]")) {
			return true
		}
	}
	return false
}

// pingRMCP sends an RMCP/ASF presence ping and reports whether a pong came
// back within 50 ms. It proves the BMC is listening without opening a session.
func pingRMCP(ctx context.Context, host string, port int) bool {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp4", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	defer conn.Close()
	ping := []byte{
		0x06, 0x00, 0xff, 0x06, // RMCP v1.0, no ACK, class ASF
		0x00, 0x00, 0x11, 0xbe, // ASF IANA enterprise number 4542
		0x80, 0x01, 0x00, 0x00, // presence ping, tag 1, reserved, no data
	}
	if _, err := conn.Write(ping); err != nil {
		return false
	}
	conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	return err == nil && n >= 9 && buf[8] == 0x40 // presence pong
}

// stop kills ipmi_sim with its process group (including any chassis.sh in
// flight), then every qemu of this Sim, and waits for them to be gone.
// Killing ipmi_sim alone would leave its qemu running.
func (s *Sim) stop(tb testing.TB) {
	if s.proc != nil {
		syscall.Kill(-s.proc.Process.Pid, syscall.SIGKILL)
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			tb.Errorf("bmctest: ipmi_sim (pid %d) did not exit after SIGKILL", s.proc.Process.Pid)
		}
	}
	pids := s.qemuPIDs()
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGTERM)
	}
	for _, pid := range pids {
		if !waitGone(pid, 3*time.Second) {
			syscall.Kill(pid, syscall.SIGKILL)
			if !waitGone(pid, 3*time.Second) {
				tb.Errorf("bmctest: qemu (pid %d) survived SIGKILL", pid)
			}
		}
	}
	if tb.Failed() {
		for _, f := range []string{"commands.log", "poweron.log", "ipmi_sim.log", "qemu.log"} {
			tb.Logf("bmctest %s:%d %s:\n%s", s.Host, s.Port, f, s.tail(f))
		}
	}
}

// qemuPID returns the pid in the pidfile if that process is our qemu.
func (s *Sim) qemuPID() (int, bool) {
	b, err := os.ReadFile(s.pidFile)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || !s.ownsQEMU(pid) {
		return 0, false
	}
	return pid, true
}

// qemuPIDs returns the qemu of the pidfile plus any other process whose
// command line names our pidfile: one that was still starting, or whose
// pidfile was already removed.
func (s *Sim) qemuPIDs() []int {
	var pids []int
	if pid, ok := s.qemuPID(); ok {
		pids = append(pids, pid)
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || (len(pids) > 0 && pids[0] == pid) {
			continue
		}
		if s.ownsQEMU(pid) && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ownsQEMU guards against pid reuse: our qemu names our pidfile.
func (s *Sim) ownsQEMU(pid int) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(cmdline), "\x00"+s.pidFile+"\x00")
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 || i+2 >= len(stat) {
		return false
	}
	state := stat[i+2]
	return state != 'Z' && state != 'X'
}

func waitGone(pid int, max time.Duration) bool {
	deadline := time.Now().Add(max)
	for alive(pid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// Freeze stops the BMC's ipmi_sim (SIGSTOP) so that it answers nothing, as
// a BMC that hangs, until thaw is called or the test ends; the machine
// keeps its power.
func (s *Sim) Freeze(tb testing.TB) (thaw func()) {
	tb.Helper()
	if s.proc == nil {
		tb.Fatalf("bmctest: Freeze of a stopped BMC")
	}
	pid := s.proc.Process.Pid
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		tb.Fatalf("bmctest: SIGSTOP ipmi_sim (pid %d): %v", pid, err)
	}
	var once sync.Once
	thaw = func() { once.Do(func() { syscall.Kill(pid, syscall.SIGCONT) }) }
	tb.Cleanup(thaw)
	return thaw
}
