package iscsitest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Errors of a refused login, as libiscsi reports them.
var (
	// ErrAuth is a CHAP failure: "Authentication failure(513)".
	ErrAuth = errors.New("iscsi login: authentication failure")
	// ErrRefused is tgtd's answer to an initiator outside the ACL (and to
	// an unknown target): "Target not found(515)".
	ErrRefused = errors.New("iscsi login: target not found")
)

// Login is what an initiator presents: the portal, the target and LUN, its
// own name and CHAP credentials.
type Login struct {
	Portal netip.AddrPort
	Target string // IQN
	LUN    int    // 0 means 1, the disk
	// Initiator is the initiator name (libiscsi's -i, qemu's
	// initiator-name); empty leaves each tool's default.
	Initiator    string
	User, Secret string
}

func (l Login) lun() int {
	if l.LUN == 0 {
		return 1
	}
	return l.LUN
}

// url is the libiscsi URL without the secret, which goes in the
// environment (LIBISCSI_CHAP_PASSWORD) rather than on a command line.
func (l Login) url(withTarget bool) string {
	u := "iscsi://"
	if l.User != "" {
		u += l.User + "@"
	}
	u += l.Portal.String() + "/"
	if withTarget {
		u += l.Target + "/" + strconv.Itoa(l.lun())
	}
	return u
}

func (l Login) libiscsi(ctx context.Context, tool string, withTarget bool, args ...string) (string, error) {
	if l.Initiator != "" {
		args = append(args, "-i", l.Initiator)
	}
	args = append(args, l.url(withTarget))
	cmd := exec.CommandContext(ctx, tool, args...)
	cmd.Env = []string{"LC_ALL=C"}
	if l.Secret != "" {
		cmd.Env = append(cmd.Env, "LIBISCSI_CHAP_PASSWORD="+l.Secret)
	}
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %w: %s", tool, l.url(withTarget), loginError(string(out)), err, out)
	}
	return string(out), nil
}

// loginError reads libiscsi's (and qemu's) text for the reason of a failed
// login.
func loginError(out string) error {
	switch {
	case strings.Contains(out, "Authentication failure"):
		return ErrAuth
	case strings.Contains(out, "Target not found"):
		return ErrRefused
	}
	return errors.New("iscsi command failed")
}

// Discovered is one target as `iscsi-ls -s` lists it.
type Discovered struct {
	IQN    string
	Portal string   // "127.0.0.1:3260,1"
	LUNs   []string // "Lun:1    Type:DIRECT_ACCESS (Size:63M)"
}

// Discover runs `iscsi-ls -s`: SendTargets discovery, then a login to each
// target to list its LUNs (which needs l.User and l.Secret). l.Target and
// l.LUN are ignored. tgtd leaves out of the answer the targets whose ACL
// does not admit the initiator.
func Discover(ctx context.Context, l Login) ([]Discovered, error) {
	out, err := l.libiscsi(ctx, "iscsi-ls", false, "-s")
	var found []Discovered
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, "Target:"); ok {
			iqn, portal, _ := strings.Cut(rest, " Portal:")
			found = append(found, Discovered{IQN: iqn, Portal: portal})
		} else if strings.HasPrefix(line, "Lun:") && len(found) > 0 {
			found[len(found)-1].LUNs = append(found[len(found)-1].LUNs, line)
		}
	}
	return found, err
}

// Inquiry runs iscsi-inq (a standard INQUIRY) and returns its output.
func Inquiry(ctx context.Context, l Login) (string, error) {
	return l.libiscsi(ctx, "iscsi-inq", true)
}

// Capacity runs `iscsi-readcapacity16 -s` and returns the LUN's size in
// bytes.
func Capacity(ctx context.Context, l Login) (int64, error) {
	out, err := l.libiscsi(ctx, "iscsi-readcapacity16", true, "-s")
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("iscsi-readcapacity16: %q: %w", out, err)
	}
	return n, nil
}

// ReadLUN copies the whole LUN to the file dst with `qemu-img convert`,
// through qemu's iscsi driver: --image-opts with file.initiator-name, and
// the secret in a --object secret read from a 0600 file.
func ReadLUN(ctx context.Context, l Login, dst string) error {
	dir, err := os.MkdirTemp("", "iscsitest-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(l.Secret), 0o600); err != nil {
		return err
	}
	opts := []string{
		"driver=raw", "file.driver=iscsi", "file.transport=tcp",
		"file.portal=" + l.Portal.String(), "file.target=" + l.Target, "file.lun=" + strconv.Itoa(l.lun()),
	}
	if l.Initiator != "" {
		opts = append(opts, "file.initiator-name="+l.Initiator)
	}
	if l.User != "" {
		opts = append(opts, "file.user="+l.User, "file.password-secret=sec0")
	}
	cmd := exec.CommandContext(ctx, "qemu-img", "convert", "-O", "raw",
		"--object", "secret,id=sec0,file="+secretFile,
		"--image-opts", strings.Join(opts, ","), dst)
	cmd.Env = []string{"LC_ALL=C"}
	cmd.WaitDelay = time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("qemu-img convert %s/%d: %w: %w: %s", l.Target, l.lun(), loginError(string(out)), err, out)
	}
	return nil
}

// Hold keeps a session with reads in flight (iscsi-perf) until the
// returned function is called or ctx ends.
func Hold(ctx context.Context, l Login) (stop func(), err error) {
	ctx, cancel := context.WithCancel(ctx)
	args := []string{}
	if l.Initiator != "" {
		args = append(args, "-i", l.Initiator)
	}
	cmd := exec.CommandContext(ctx, "iscsi-perf", append(args, l.url(true))...)
	cmd.Env = []string{"LC_ALL=C", "LIBISCSI_CHAP_PASSWORD=" + l.Secret}
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("iscsi-perf: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait() // killed by cancel: iscsi-perf ignores SIGTERM
		close(done)
	}()
	return func() { cancel(); <-done }, nil
}
