package boottest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tgtdSocketDir is where tgtd keeps its control socket and lock, per -C port.
const tgtdSocketDir = "/var/run/tgtd"

// tgtd is a tgt iSCSI target daemon of this test alone: its own control
// port (-C) and its own portal on 127.0.0.1, stopped when the test ends.
type tgtd struct {
	tb      testing.TB
	tgtadm  string
	Control int // tgtd -C
	Port    int // iSCSI portal port on 127.0.0.1
	logPath string
	proc    *os.Process
	exited  chan struct{}
	tids    []int
}

// startTGTD runs `tgtd -f --iscsi portal=127.0.0.1:<port> -C <control>`.
// tgtd does not exit when its portal is taken (it falls back to :3260, or
// to no portal at all), so the portal is checked with tgtadm before use.
func startTGTD(tb testing.TB) *tgtd {
	tb.Helper()
	bin := lookTool(tb, "tgtd", "tgt")
	g := &tgtd{tb: tb, tgtadm: lookTool(tb, "tgtadm", "tgt")}
	if os.Geteuid() != 0 {
		missing(tb, "tgtd needs root")
	}
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if err = g.start(bin); err == nil {
			tb.Cleanup(g.stop)
			return g
		}
	}
	tb.Fatalf("start tgtd: %v", err)
	return nil
}

func (g *tgtd) start(bin string) error {
	port, err := freeTCPPort()
	if err != nil {
		return err
	}
	g.Port, g.Control = port, freeControlPort()
	g.logPath = filepath.Join(g.tb.TempDir(), "tgtd.log")
	logf, err := os.Create(g.logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "-f", "--iscsi", fmt.Sprintf("portal=127.0.0.1:%d", g.Port), "-C", strconv.Itoa(g.Control))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	g.proc, g.exited = cmd.Process, make(chan struct{})
	go func() { cmd.Wait(); close(g.exited) }()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		out, err := g.run(ctx, "--lld", "iscsi", "--op", "show", "--mode", "portal")
		select {
		case <-g.exited:
			g.removeSocket()
			return fmt.Errorf("tgtd -C %d exited: %s", g.Control, g.log())
		default:
		}
		if err == nil {
			if strings.Contains(out, fmt.Sprintf("Portal: 127.0.0.1:%d,", g.Port)) {
				return nil
			}
			g.stop()
			return fmt.Errorf("tgtd did not bind 127.0.0.1:%d: %s", g.Port, g.log())
		}
		select {
		case <-ctx.Done():
			g.stop()
			return fmt.Errorf("tgtd -C %d not ready: %v: %s", g.Control, err, g.log())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func freeTCPPort() (int, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// freeControlPort picks a tgtd control port whose lock file does not exist,
// so that cleanup never removes another tgtd's files.
func freeControlPort() int {
	for {
		n := 1000 + rand.IntN(31000) // tgtd takes -C 0-32767
		if _, err := os.Stat(filepath.Join(tgtdSocketDir, fmt.Sprintf("socket.%d.lock", n))); errors.Is(err, os.ErrNotExist) {
			return n
		}
	}
}

// run runs tgtadm against this tgtd with a deadline.
func (g *tgtd) run(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, g.tgtadm, append([]string{"-C", strconv.Itoa(g.Control)}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("tgtadm %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// adm runs `tgtadm --lld iscsi args...` and fails the test on error.
func (g *tgtd) adm(args ...string) {
	g.tb.Helper()
	if _, err := g.run(context.Background(), append([]string{"--lld", "iscsi"}, args...)...); err != nil {
		g.tb.Fatal(err)
	}
}

// target is one iSCSI target: a LUN backed by a file, a CHAP account and an
// ACL admitting one initiator name.
type target struct {
	TID                  int
	IQN                  string
	LUN                  int
	Backing              string
	CHAPUser, CHAPSecret string
	Initiator            string
}

func (g *tgtd) newTarget(t target) {
	g.tb.Helper()
	tid := strconv.Itoa(t.TID)
	g.adm("--op", "new", "--mode", "target", "--tid", tid, "-T", t.IQN)
	g.tids = append(g.tids, t.TID)
	g.adm("--op", "new", "--mode", "logicalunit", "--tid", tid, "--lun", strconv.Itoa(t.LUN), "-b", t.Backing)
	g.adm("--op", "new", "--mode", "account", "--user", t.CHAPUser, "--password", t.CHAPSecret)
	g.adm("--op", "bind", "--mode", "account", "--tid", tid, "--user", t.CHAPUser)
	g.adm("--op", "bind", "--mode", "target", "--tid", tid, "-Q", t.Initiator)
}

// stop deletes every target, then the system (tgtd -f ignored SIGTERM
// here, even without targets), waits for tgtd to exit, and removes its socket files.
func (g *tgtd) stop() {
	select {
	case <-g.exited:
		g.removeSocket()
		return
	default:
	}
	ctx := context.Background()
	for _, tid := range g.tids {
		if _, err := g.run(ctx, "--lld", "iscsi", "--op", "delete", "--mode", "target", "--tid", strconv.Itoa(tid), "--force"); err != nil {
			g.tb.Logf("tgtd cleanup: %v", err)
		}
	}
	g.tids = nil
	if _, err := g.run(ctx, "--op", "delete", "--mode", "system"); err != nil {
		g.tb.Logf("tgtd cleanup: %v", err)
	}
	select {
	case <-g.exited:
	case <-time.After(10 * time.Second):
		g.tb.Errorf("tgtd -C %d did not exit after delete system; killing it", g.Control)
		g.proc.Kill()
		<-g.exited
	}
	g.removeSocket()
}

func (g *tgtd) removeSocket() {
	for _, suffix := range []string{"", ".lock"} {
		os.Remove(filepath.Join(tgtdSocketDir, fmt.Sprintf("socket.%d%s", g.Control, suffix)))
	}
}

func (g *tgtd) log() string {
	b, _ := os.ReadFile(g.logPath)
	return string(b)
}

// waitLog polls tgtd's log until it contains s at least count times.
func (g *tgtd) waitLog(ctx context.Context, s string, count int) error {
	return poll(ctx, func() bool { return strings.Count(g.log(), s) >= count },
		func() string { return tail(g.log()) })
}

// poll calls done every 100 ms until it returns true or ctx ends, and then
// returns an error with what() appended.
func poll(ctx context.Context, done func() bool, what func() string) error {
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	for !done() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w:\n%s", ctx.Err(), what())
		case <-ticker.C:
		}
	}
	return nil
}
