// Package iscsitest runs a real tgtd for tests and drives real initiators
// (libiscsi's command-line tools and qemu-img) against it. Import it from
// _test.go files only.
package iscsitest

import (
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/iscsi"
)

// RequireRealEnv is the environment variable that, set to 1, turns a
// missing tgt, libiscsi-bin or qemu-img into a test failure instead of a
// skip.
const RequireRealEnv = "MALLEABLE_REQUIRE_REAL"

// packageOf names the Debian package of a tool, for the skip message.
func packageOf(tool string) string {
	switch tool {
	case "tgtd", "tgtadm":
		return "tgt"
	case "qemu-img":
		return "qemu-utils and qemu-block-extra"
	}
	return "libiscsi-bin"
}

// Require skips tb unless every tool is installed and the test runs as
// root (tgtd needs it for /var/run/tgtd), or fails it when
// MALLEABLE_REQUIRE_REAL=1.
func Require(tb testing.TB, tools ...string) {
	tb.Helper()
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err := os.Stat("/usr/sbin/" + tool); err != nil {
				missing = append(missing, fmt.Sprintf("%s (Debian package %s)", tool, packageOf(tool)))
			}
		}
	}
	var why string
	switch {
	case len(missing) > 0:
		why = fmt.Sprintf("missing %v", missing)
	case os.Geteuid() != 0:
		why = "tgtd must run as root"
	default:
		return
	}
	if os.Getenv(RequireRealEnv) == "1" {
		tb.Fatalf("iscsitest: %s and %s=1", why, RequireRealEnv)
	}
	tb.Skipf("iscsitest: %s; install them (apt-get install tgt libiscsi-bin qemu-utils qemu-block-extra) or set %s=1 to fail instead", why, RequireRealEnv)
}

// Logger returns a logger that writes to tb's output at debug level.
func Logger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Options configure Start. The zero value picks free ports.
type Options struct {
	// Portal to listen on; zero picks a free port on 127.0.0.1.
	Portal netip.AddrPort
	// ControlPort to use; zero picks a free one.
	ControlPort int
}

// Start runs a tgtd for the rest of tb (stopped, with its targets, when tb
// ends) and returns it. Free ports are found by trying: another tgtd may
// hold a control port, another process may take the portal.
func Start(tb testing.TB, opts Options) *iscsi.Tgtd {
	tb.Helper()
	Require(tb, "tgtd", "tgtadm")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var lastErr error
	for range 10 {
		o := iscsi.Options{Logger: Logger(tb), ControlPort: opts.ControlPort}
		if o.ControlPort == 0 {
			o.ControlPort = 1024 + rand.IntN(iscsi.MaxControlPort-1024)
		}
		portal := opts.Portal
		if !portal.IsValid() {
			p, err := freePort()
			if err != nil {
				tb.Fatalf("iscsitest: %v", err)
			}
			portal = p
		}
		o.Portal = portal.String()
		t, err := iscsi.StartTgtd(ctx, o)
		if err == nil {
			tb.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := t.Stop(ctx); err != nil {
					tb.Errorf("iscsitest: %v", err)
				}
			})
			return t
		}
		lastErr = err
		retry := errors.Is(err, iscsi.ErrControlPortInUse) && opts.ControlPort == 0 ||
			errors.Is(err, iscsi.ErrPortalInUse) && !opts.Portal.IsValid()
		if !retry {
			break
		}
	}
	tb.Fatalf("iscsitest: %v", lastErr)
	return nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (netip.AddrPort, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return netip.MustParseAddrPort(l.Addr().String()), nil
}

// Backing creates a sparse file of size bytes in a temporary directory of
// tb, with random data in a few places (the first and last 4 KiB, 1 MiB at
// 1 MiB, and 64 KiB in the middle) so that a whole-LUN comparison means
// something. Its parent directory is removed when tb ends.
func Backing(tb testing.TB, size int64) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "disk.img")
	f, err := os.Create(p)
	if err != nil {
		tb.Fatalf("iscsitest: %v", err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		tb.Fatalf("iscsitest: %v", err)
	}
	for _, c := range []struct{ off, n int64 }{
		{0, 4 << 10}, {1 << 20, 1 << 20}, {size / 2, 64 << 10}, {size - 4<<10, 4 << 10},
	} {
		if c.off < 0 || c.off+c.n > size {
			continue
		}
		buf := make([]byte, c.n)
		crand.Read(buf)
		if _, err := f.WriteAt(buf, c.off); err != nil {
			tb.Fatalf("iscsitest: %v", err)
		}
	}
	if err := f.Close(); err != nil {
		tb.Fatalf("iscsitest: %v", err)
	}
	return p
}

// SHA256 returns the hex SHA-256 of the file at p.
func SHA256(tb testing.TB, p string) string {
	tb.Helper()
	f, err := os.Open(p)
	if err != nil {
		tb.Fatalf("iscsitest: %v", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		tb.Fatalf("iscsitest: %v", err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
