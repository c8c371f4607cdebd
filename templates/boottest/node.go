package boottest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// virtioROM is the iPXE option ROM qemu loads for virtio-net-pci (Debian
// package ipxe-qemu).
const virtioROM = "efi-virtio.rom"

// DefaultTimeout is a node's lifetime when NodeOptions.Timeout is zero.
const DefaultTimeout = 5 * time.Minute

// tailBytes is how much of a log an error or a failed test shows.
const tailBytes = 3000

// NodeOptions configures BootISCSI.
type NodeOptions struct {
	// Script is the iPXE script the node boots, served by qemu's built-in
	// TFTP server as boot.ipxe. It reaches the host's 127.0.0.1 as
	// 10.0.2.2, so a sanboot portal on the host is 10.0.2.2.
	Script string
	// Dir is where the node's own directory is created; default a temporary
	// directory of the test.
	Dir string
	// Timeout bounds the node's life: qemu is killed after it, or at the
	// test's deadline if that comes first. Default DefaultTimeout. It is a
	// safety net, not an assertion: wait with WaitSerial and a context.
	Timeout time.Duration
}

// Node is a running qemu machine that network-boots into iPXE and runs
// NodeOptions.Script. It is killed when the test that started it ends.
// Its methods may be called from several goroutines.
type Node struct {
	// Dir holds tftp/boot.ipxe, serial.log (COM1: the BIOS's and iPXE's
	// console and whatever the booted code writes) and qemu.log.
	Dir string

	cancel  context.CancelFunc
	exited  chan struct{} // closed once qemu has been reaped
	waitErr error         // qemu's exit, set before exited is closed
	stop    sync.Once
}

// BootISCSI starts a node that iPXE-boots opts.Script, as a bare-metal
// node chained into its per-node script would:
//
//	qemu-system-x86_64 -accel tcg -m 256 -boot n
//	  -netdev user,id=n0,tftp=<dir>/tftp,bootfile=boot.ipxe -device virtio-net-pci,netdev=n0
//	  -chardev file,id=com1,path=<dir>/serial.log -serial chardev:com1
//	  -display none -vga none -fw_cfg name=etc/sercon-port,file=<dir>/sercon-port -no-reboot
//
// With no VGA card, the sercon-port file makes SeaBIOS mirror the text
// console (its own and iPXE's messages) to COM1, so serial.log shows why a
// boot failed. It returns once qemu has started; the boot takes seconds
// (about 5-10 s to a sanboot marker under TCG). It skips tb when qemu or its
// iPXE ROM is missing, unless MALLEABLE_REQUIRE_REAL=1.
func BootISCSI(tb testing.TB, opts NodeOptions) *Node {
	tb.Helper()
	qemu := lookTool(tb, "qemu-system-x86_64", "qemu-system-x86")
	lookIPXE(tb, qemu)
	n, args := prepareNode(tb, opts)
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	end := time.Now().Add(timeout)
	if d, ok := deadline(tb); ok && d.Before(end) {
		end = d
	}
	ctx, cancel := context.WithDeadline(context.Background(), end)
	n.cancel = cancel
	qlog, err := os.Create(filepath.Join(n.Dir, "qemu.log"))
	if err != nil {
		cancel()
		tb.Fatalf("boottest: %v", err)
	}
	defer qlog.Close() // qemu holds its own descriptor
	cmd := exec.CommandContext(ctx, qemu, args...)
	cmd.Stdout, cmd.Stderr = qlog, qlog
	// A test binary killed hard takes its nodes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		cancel()
		tb.Fatalf("boottest: start qemu: %v", err)
	}
	go func() {
		n.waitErr = cmd.Wait()
		close(n.exited)
	}()
	tb.Cleanup(func() {
		n.Stop()
		if tb.Failed() {
			tb.Logf("boottest: node %s serial.log (tail):\n%s", n.Dir, tail(n.Serial()))
			tb.Logf("boottest: node %s qemu.log (tail):\n%s", n.Dir, tail(n.read("qemu.log")))
		}
	})
	return n
}

// prepareNode creates the node's directory and files and returns the Node
// (not yet started) and qemu's arguments.
func prepareNode(tb testing.TB, opts NodeOptions) (*Node, []string) {
	tb.Helper()
	parent := opts.Dir
	if parent == "" {
		parent = tb.TempDir()
	}
	dir, err := os.MkdirTemp(parent, "node-")
	if err == nil {
		dir, err = filepath.Abs(dir)
	}
	if err == nil {
		err = os.Mkdir(filepath.Join(dir, "tftp"), 0o755)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "tftp", "boot.ipxe"), []byte(opts.Script), 0o644)
	}
	if err == nil {
		// SeaBIOS reads etc/sercon-port as a little-endian integer: COM1.
		err = os.WriteFile(filepath.Join(dir, "sercon-port"), []byte{0xf8, 0x03}, 0o644)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "serial.log"), nil, 0o644)
	}
	if err != nil {
		tb.Fatalf("boottest: prepare node directory: %v", err)
	}
	args := []string{
		"-accel", "tcg", "-m", "256", "-boot", "n",
		"-netdev", "user,id=n0,tftp=" + qemuOpt(filepath.Join(dir, "tftp")) + ",bootfile=boot.ipxe",
		"-device", "virtio-net-pci,netdev=n0",
		"-chardev", "file,id=com1,path=" + qemuOpt(filepath.Join(dir, "serial.log")),
		"-serial", "chardev:com1",
		"-display", "none", "-vga", "none",
		"-fw_cfg", "name=etc/sercon-port,file=" + qemuOpt(filepath.Join(dir, "sercon-port")),
		"-no-reboot",
	}
	return &Node{Dir: dir, exited: make(chan struct{})}, args
}

// qemuOpt escapes a value for a qemu option list, where ',' separates
// options and ",," is a literal comma.
func qemuOpt(v string) string { return strings.ReplaceAll(v, ",", ",,") }

// deadline returns the test's deadline, when tb has one (*testing.T does
// under go test -timeout).
func deadline(tb testing.TB) (time.Time, bool) {
	if d, ok := tb.(interface{ Deadline() (time.Time, bool) }); ok {
		return d.Deadline()
	}
	return time.Time{}, false
}

// WaitSerial polls the node's serial log until it contains marker, and
// returns nil then. It returns an error with the log's tail when ctx ends or
// qemu exits first.
func (n *Node) WaitSerial(ctx context.Context, marker string) error {
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	for {
		if strings.Contains(n.Serial(), marker) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %q on the serial console of %s: %w; serial.log ends:\n%s",
				marker, n.Dir, ctx.Err(), tail(n.Serial()))
		case <-n.exited:
			if strings.Contains(n.Serial(), marker) {
				return nil
			}
			return fmt.Errorf("qemu of %s exited (%v) before %q appeared on its serial console; serial.log ends:\n%s\nqemu.log ends:\n%s",
				n.Dir, n.waitErr, marker, tail(n.Serial()), tail(n.read("qemu.log")))
		case <-ticker.C:
		}
	}
}

// Serial returns everything the node has written to COM1 so far, raw
// (SeaBIOS's console mirror includes ANSI escape sequences).
func (n *Node) Serial() string { return n.read("serial.log") }

// Exited reports whether qemu has exited, and its error if so.
func (n *Node) Exited() (bool, error) {
	select {
	case <-n.exited:
		return true, n.waitErr
	default:
		return false, nil
	}
}

// Stop kills qemu and waits for it. It is idempotent; the test's cleanup
// calls it too.
func (n *Node) Stop() {
	n.stop.Do(func() {
		n.cancel()
		<-n.exited
	})
}

func (n *Node) read(name string) string {
	b, err := os.ReadFile(filepath.Join(n.Dir, name))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Sprintf("(read %s: %v)", name, err)
	}
	return string(b)
}

// tail returns the end of a log, made readable: ANSI escape sequences,
// carriage returns and backspaces (iPXE's spinner) are dropped.
func tail(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == 0x1b: // ESC [ params final, or ESC and one byte
			i++
			if i < len(s) && s[i] == '[' {
				for i+1 < len(s) && (s[i+1] < 0x40 || s[i+1] > 0x7e) {
					i++
				}
				i++
			}
		case c == '\r' || c == '\b':
		default:
			b.WriteByte(c)
		}
	}
	out := b.String()
	if len(out) > tailBytes {
		out = "..." + out[len(out)-tailBytes:]
	}
	return out
}
