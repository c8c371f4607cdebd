package iscsi

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ipcDir is where tgtd keeps its control socket "socket.<port>" and the
// lock file "socket.<port>.lock" that allows one tgtd per control port.
const ipcDir = "/var/run/tgtd"

// readyPoll is how often StartTgtd asks a starting tgtd whether it answers.
const readyPoll = 20 * time.Millisecond

// Tgtd is a tgtd run by the appliance as a child process.
type Tgtd struct {
	portal netip.AddrPort
	port   int
	drv    *Driver
	log    *slog.Logger
	cmd    *exec.Cmd
	output *lineLogger
	done   chan struct{} // closed when tgtd has exited and been reaped
	err    error         // tgtd's exit, valid after done

	stopOnce sync.Once
	stopErr  error
}

// StartTgtd runs `tgtd -f --iscsi portal=<Portal> -C <ControlPort>` and
// returns once tgtd answers tgtadm and listens on exactly the portal. It
// fails with ErrControlPortInUse when another tgtd holds the control port,
// and with ErrPortalInUse when tgtd could not listen on the portal (tgtd
// then falls back to 0.0.0.0:3260 and [::]:3260, so it is stopped at once).
// tgtd is killed if the calling process dies (Pdeathsig); its targets go
// with it, as they do on any tgtd restart. ctx bounds the start only.
func StartTgtd(ctx context.Context, opts Options) (*Tgtd, error) {
	opts = opts.withDefaults()
	portal, err := netip.ParseAddrPort(opts.Portal)
	if err != nil || portal.Port() == 0 || !portal.Addr().IsValid() || portal.Addr().Zone() != "" {
		return nil, fmt.Errorf("start tgtd: %w: portal %q is not an address:port", ErrInvalid, opts.Portal)
	}
	if opts.ControlPort < 0 || opts.ControlPort > MaxControlPort {
		return nil, fmt.Errorf("start tgtd: %w: control port %d is outside 0..%d", ErrInvalid, opts.ControlPort, MaxControlPort)
	}
	log := opts.Logger.With("control_port", opts.ControlPort, "portal", portal.String())
	if pid, err := lockHolder(opts.ControlPort); err != nil {
		return nil, fmt.Errorf("start tgtd: %w", err)
	} else if pid != 0 {
		return nil, fmt.Errorf("start tgtd: %w: %d is held by process %d", ErrControlPortInUse, opts.ControlPort, pid)
	}

	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	t := &Tgtd{
		portal: portal,
		port:   opts.ControlPort,
		drv:    New(opts),
		log:    log,
		output: &lineLogger{log: log},
		done:   make(chan struct{}),
	}
	t.cmd = exec.Command(opts.TgtdPath, "-f", "--iscsi", "portal="+portal.String(), "-C", strconv.Itoa(opts.ControlPort))
	t.cmd.Env = []string{"LC_ALL=C"}
	t.cmd.Stdout, t.cmd.Stderr = t.output, t.output
	t.cmd.WaitDelay = time.Second
	t.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := t.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start tgtd: %w", err)
	}
	go func() {
		t.err = t.cmd.Wait()
		close(t.done)
	}()
	log.Debug("tgtd started", "pid", t.cmd.Process.Pid)
	if err := t.waitReady(ctx); err != nil {
		t.kill()
		_ = removeIPCFiles(opts.ControlPort) // only if the lock is free, so never another tgtd's
		return nil, fmt.Errorf("start tgtd on %s, control port %d: %w", portal, opts.ControlPort, err)
	}
	log.Info("tgtd ready", "pid", t.cmd.Process.Pid)
	return t, nil
}

// waitReady polls until tgtd answers on its control port, then checks its
// portals.
func (t *Tgtd) waitReady(ctx context.Context) error {
	for {
		_, err := t.drv.run(ctx, "system show", "--mode", "system", "--op", "show")
		if err == nil {
			break
		}
		select {
		case <-t.done:
			if pid, lerr := lockHolder(t.port); lerr == nil && pid != 0 {
				return fmt.Errorf("%w: held by process %d", ErrControlPortInUse, pid)
			}
			return fmt.Errorf("tgtd exited (%v): %s", t.err, t.output.tail())
		case <-ctx.Done():
			return fmt.Errorf("tgtd does not answer: %w: %w", ctx.Err(), err)
		case <-time.After(readyPoll):
		}
	}
	out, err := t.drv.run(ctx, "portal show", "--lld", "iscsi", "--mode", "portal", "--op", "show")
	if err != nil {
		return err
	}
	portals := parsePortals(out)
	if len(portals) != 1 || portals[0] != t.portal {
		return fmt.Errorf("%w: tgtd listens on %v instead: %s", ErrPortalInUse, portals, t.output.tail())
	}
	return nil
}

// parsePortals parses `tgtadm --lld iscsi --mode portal --op show`:
// "Portal: 127.0.0.1:3260,1" per line (the ",1" is the portal group tag).
func parsePortals(out []byte) []netip.AddrPort {
	var portals []netip.AddrPort
	for line := range strings.Lines(string(out)) {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "Portal: ")
		if !ok {
			continue
		}
		v, _, _ = strings.Cut(v, ",")
		if ap, err := netip.ParseAddrPort(v); err == nil {
			portals = append(portals, ap)
		}
	}
	return portals
}

// Driver returns a Driver for this tgtd, with the options it was started
// with.
func (t *Tgtd) Driver() *Driver { return t.drv }

// Portal returns the address and port tgtd listens on.
func (t *Tgtd) Portal() netip.AddrPort { return t.portal }

// ControlPort returns tgtd's control port.
func (t *Tgtd) ControlPort() int { return t.port }

// Done is closed when tgtd has exited, by Stop or otherwise; Err then tells
// why. A supervisor restarts tgtd and calls Driver.Reconcile.
func (t *Tgtd) Done() <-chan struct{} { return t.done }

// Err returns how tgtd exited; it is valid once Done is closed.
func (t *Tgtd) Err() error {
	select {
	case <-t.done:
		return t.err
	default:
		return nil
	}
}

// Stop shuts tgtd down. tgtd ignores SIGTERM (and refuses to delete the
// system while targets exist), so Stop deletes every target with --force,
// then asks tgtd to exit with `--op delete --mode system`, and waits. If
// that fails or ctx ends first, tgtd is killed. Stop then removes the
// control socket and lock file, taking the lock first so that a tgtd
// starting meanwhile is never left sharing the port. Calling Stop again
// returns the first result.
func (t *Tgtd) Stop(ctx context.Context) error {
	t.stopOnce.Do(func() { t.stopErr = t.stop(ctx) })
	return t.stopErr
}

func (t *Tgtd) stop(ctx context.Context) error {
	var errs []error
	select {
	case <-t.done:
	default:
		if err := t.shutdown(ctx); err != nil {
			errs = append(errs, err)
			t.kill()
		}
		select {
		case <-t.done:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("wait for tgtd to exit: %w", ctx.Err()))
			t.kill()
		}
	}
	if err := removeIPCFiles(t.port); err != nil {
		errs = append(errs, err)
	}
	t.log.Info("tgtd stopped")
	if len(errs) > 0 {
		return fmt.Errorf("stop tgtd (control port %d): %w", t.port, errors.Join(errs...))
	}
	return nil
}

// shutdown deletes every target, then the system.
func (t *Tgtd) shutdown(ctx context.Context) error {
	d := t.drv
	d.mu.Lock()
	defer d.mu.Unlock()
	st, err := d.snapshot(ctx)
	if err != nil {
		return err
	}
	for _, cur := range append([]*Status(nil), st.targets...) {
		if err := d.remove(ctx, st, cur); err != nil {
			return err
		}
	}
	if _, err := d.run(ctx, "system delete", "--mode", "system", "--op", "delete"); err != nil && !errors.Is(err, ErrNoDaemon) {
		return err
	}
	return nil
}

// kill sends SIGKILL and waits for the exit.
func (t *Tgtd) kill() {
	select {
	case <-t.done:
		return
	default:
	}
	_ = t.cmd.Process.Kill()
	<-t.done
}

// lockHolder returns the process that holds tgtd's lock for the control
// port, or 0 when none does. tgtd takes it with lockf(F_TLOCK) on the
// first byte, a POSIX record lock that F_GETLK reports.
func lockHolder(port int) (int, error) {
	f, err := os.Open(lockPath(port))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("check tgtd lock: %w", err)
	}
	defer f.Close()
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0, Start: 0, Len: 1}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_GETLK, &lk); err != nil {
		return 0, fmt.Errorf("check tgtd lock %s: %w", lockPath(port), err)
	}
	if lk.Type == syscall.F_UNLCK {
		return 0, nil
	}
	return int(lk.Pid), nil
}

// removeIPCFiles removes the control socket and lock file of an exited
// tgtd, but only while holding the lock itself: a tgtd that opened the old
// lock file meanwhile fails to lock it and exits, instead of sharing the
// port with a later tgtd that creates a new file.
func removeIPCFiles(port int) error {
	f, err := os.OpenFile(lockPath(port), os.O_WRONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove tgtd control files: %w", err)
	}
	defer f.Close()
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0, Start: 0, Len: 1}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk); err != nil {
		return nil // another tgtd owns the port now; its files stay
	}
	var errs []error
	for _, p := range []string{socketPath(port), lockPath(port)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func socketPath(port int) string { return ipcDir + "/socket." + strconv.Itoa(port) }
func lockPath(port int) string   { return socketPath(port) + ".lock" }

// lineLogger sends tgtd's output to the logger line by line and keeps the
// last lines for error messages.
type lineLogger struct {
	log  *slog.Logger
	mu   sync.Mutex
	buf  []byte
	last []string
}

const keepLines = 8

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.line(string(l.buf[:i]))
		l.buf = l.buf[i+1:]
	}
	return len(p), nil
}

func (l *lineLogger) line(s string) {
	s = strings.TrimSpace(s)
	if s == "" {
		return
	}
	level := slog.LevelDebug
	if strings.Contains(s, "auth") {
		level = slog.LevelWarn // such as "CHAP initiator auth.: authentication of <iqn> failed"
	}
	l.log.Log(context.Background(), level, "tgtd", "line", s)
	l.last = append(l.last, s)
	if len(l.last) > keepLines {
		l.last = l.last[1:]
	}
}

// tail returns the last lines tgtd printed, joined with "; ".
func (l *lineLogger) tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		sc := bufio.NewScanner(bytes.NewReader(l.buf))
		for sc.Scan() {
			l.line(sc.Text())
		}
		l.buf = nil
	}
	return strings.Join(l.last, "; ")
}

var _ io.Writer = (*lineLogger)(nil)
