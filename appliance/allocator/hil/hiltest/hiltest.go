// Package hiltest runs the genuine HIL server and OBMd for tests, from the
// kit in ../shared/hil (relative to the repository root): one instance per
// Kit, built into the test's own temporary directory and listening on free
// loopback ports. Import it from _test.go files only.
//
// Where the kit is absent the test is skipped with a loud message, and
// fails instead when MALLEABLE_REQUIRE_REAL=1.
package hiltest

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RequireRealEnv is the environment variable that, set to 1, turns a
// missing kit into a test failure instead of a skip.
const RequireRealEnv = "MALLEABLE_REQUIRE_REAL"

// Kit is a running HIL (API and network daemon) and OBMd. Its methods
// drive HIL as its administrator, the way an operator would.
type Kit struct {
	// URL is HIL's base URL, without /v0: what [hil] endpoint takes.
	URL string
	// AdminUser and AdminPass are HIL's administrator account.
	AdminUser, AdminPass string
	// OBMDURL and OBMDToken are OBMd's base URL and admin token.
	OBMDURL, OBMDToken string
	// Dir is the kit's working directory (build, database, logs).
	Dir string

	tb                testing.TB
	kit               string // the kit's scripts
	hilPort, obmdPort int
	mockSwitch        string
	ports             int // switch ports given out by AttachNetwork
	hc                *http.Client
}

// Dir returns the kit's directory, or "" when it is absent: hil/ under
// $MALLEABLE_SHARED when the test command set it, else ../shared/hil from
// the repository root.
func Dir() string {
	if shared := os.Getenv("MALLEABLE_SHARED"); shared != "" {
		kit := filepath.Join(shared, "hil")
		if _, err := os.Stat(filepath.Join(kit, "up.sh")); err != nil {
			return ""
		}
		return kit
	}
	wd, err := os.Getwd()
	if err != nil {
		return ""
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			kit := filepath.Join(d, "..", "shared", "hil")
			if _, err := os.Stat(filepath.Join(kit, "up.sh")); err != nil {
				return ""
			}
			return kit
		}
		if filepath.Dir(d) == d {
			return ""
		}
	}
}

// Start builds the kit into a new temporary directory (5–6 s once Go's
// build cache is warm) and starts it with fresh state: only the admin
// account exists. It is stopped when tb ends.
func Start(tb testing.TB) *Kit {
	tb.Helper()
	kit := Dir()
	if kit == "" {
		msg := "hiltest: the real HIL kit (../shared/hil from the repository root) is absent"
		if os.Getenv(RequireRealEnv) == "1" {
			tb.Fatalf("%s, and %s=1 requires it", msg, RequireRealEnv)
		}
		tb.Skipf("%s; SKIPPING this test against real HIL (set %s=1 to fail instead)", msg, RequireRealEnv)
	}
	dir := tb.TempDir()
	// HIL runs as the kit's own user when tests run as root: it must be
	// able to reach the directory (t.TempDir is mode 0700).
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			tb.Fatalf("hiltest: %v", err)
		}
	}
	k := &Kit{Dir: dir, tb: tb, kit: kit, hc: &http.Client{Timeout: 90 * time.Second}}
	start := time.Now()
	if out, err := k.script(5*time.Minute, nil, "build.sh", dir); err != nil {
		tb.Fatalf("hiltest: build.sh: %v\n%s", err, tail(out))
	}
	tb.Logf("hiltest: kit built in %s", time.Since(start).Round(100*time.Millisecond))
	tb.Cleanup(k.Down)
	k.Up()
	return k
}

// Up starts HIL and OBMd from nothing, on the ports of the previous Up if
// any: a new database with only the admin account, an empty OBMd. What HIL
// held before is lost, as when HIL restarts on an empty database.
func (k *Kit) Up() {
	k.tb.Helper()
	var out []byte
	var err error
	for try := 0; try < 3; try++ {
		if k.hilPort == 0 || try > 0 {
			k.hilPort, k.obmdPort = freePort(k.tb), freePort(k.tb)
		}
		env := []string{"HIL_PORT=" + strconv.Itoa(k.hilPort), "OBMD_PORT=" + strconv.Itoa(k.obmdPort)}
		start := time.Now()
		if out, err = k.script(2*time.Minute, env, "up.sh", k.Dir); err == nil {
			k.tb.Logf("hiltest: up in %s", time.Since(start).Round(100*time.Millisecond))
			break
		}
		if !bytes.Contains(out, []byte("already in use")) {
			break
		}
	}
	if err != nil {
		k.tb.Fatalf("hiltest: up.sh: %v\n%s", err, tail(out))
	}
	env, err := readEnv(filepath.Join(k.Dir, "run", "env"))
	if err != nil {
		k.tb.Fatalf("hiltest: %v", err)
	}
	k.URL, k.OBMDURL = env["HIL_URL"], env["OBMD_URL"]
	k.AdminUser, k.AdminPass, k.OBMDToken = env["HIL_ADMIN_USER"], env["HIL_ADMIN_PASS"], env["OBMD_ADMIN_TOKEN"]
	k.mockSwitch = env["HIL_MOCK_SWITCH_TYPE"]
}

// Down stops HIL, its network daemon and OBMd.
func (k *Kit) Down() {
	if out, err := k.script(time.Minute, nil, "down.sh", k.Dir); err != nil {
		k.tb.Errorf("hiltest: down.sh: %v\n%s", err, tail(out))
	}
}

func (k *Kit) script(timeout time.Duration, env []string, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(k.kit, name), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	return cmd.CombinedOutput()
}

// readEnv parses up.sh's run/env: NAME='value' lines.
func readEnv(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok {
			out[k] = strings.Trim(v, "'")
		}
	}
	return out, sc.Err()
}

func freePort(tb testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("hiltest: free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func tail(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-30):], "\n")
}
