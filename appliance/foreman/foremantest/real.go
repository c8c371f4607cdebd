package foremantest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/bmc/bmctest"
)

// The kit's images (../shared/foreman, built by its build.sh).
const (
	ForemanImage  = "local/foreman:3.12"
	PostgresImage = "local/postgres:15"
)

// realStartLimit bounds a cold start (migrate, seed, puma): 76–94 s here
// on 2 cores when quiet, far longer under load.
const realStartLimit = 6 * time.Minute

// RequireKit skips the test, loudly, without Docker or the kit's images
// (fails it under MALLEABLE_REQUIRE_REAL=1).
func RequireKit(tb testing.TB) {
	tb.Helper()
	miss := func(why string) {
		msg := "REAL FOREMAN NOT RUN: " + why + " (build the kit with ../shared/foreman/build.sh)"
		if os.Getenv(bmctest.RequireRealEnv) == "1" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	if _, err := exec.LookPath("docker"); err != nil {
		miss("docker is not installed")
	}
	for _, img := range []string{ForemanImage, PostgresImage} {
		if out, err := exec.Command("docker", "image", "inspect", "-f", "{{.Id}}", img).CombinedOutput(); err != nil {
			miss(fmt.Sprintf("image %s: %v: %s", img, err, bytes.TrimSpace(out)))
		}
	}
}

// StartReal runs the kit's real Foreman 3.12 and its PostgreSQL on the
// host network (loopback ports), migrated and seeded with opts, and waits
// until /api/v2/ping answers. Both containers are removed when the test
// ends (their logs shown first if it failed). It skips loudly without the
// kit. A cold start takes about 85 s: share one per test binary.
func StartReal(tb testing.TB, opts Options) *Instance {
	tb.Helper()
	RequireKit(tb)
	opts.defaults()
	suffix := make([]byte, 4)
	rand.Read(suffix)
	prefix := "malleable-foremantest-" + hex.EncodeToString(suffix)
	dbPort, webPort := freePort(tb), freePort(tb)
	dbPW := "pg-" + hex.EncodeToString(suffix)

	docker := func(args ...string) string {
		tb.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
		if err != nil {
			tb.Fatalf("docker %s: %v\n%s", args[0], err, out)
		}
		return strings.TrimSpace(string(out))
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			for _, c := range []string{prefix + "-foreman", prefix + "-db"} {
				out, _ := exec.Command("docker", "logs", "--tail", "80", c).CombinedOutput()
				tb.Logf("--- docker logs %s ---\n%s", c, out)
			}
		}
		exec.Command("docker", "rm", "-f", "-v", prefix+"-foreman", prefix+"-db").Run()
	})
	// Foreman runs as uid 1001: it gets its own copies of its TLS files.
	var mounts []string
	dir := tb.TempDir()
	for name, b := range map[string][]byte{"client_cert.pem": opts.ClientCertPEM, "client_key.pem": opts.ClientKeyPEM, "proxy_ca.pem": opts.ProxyCAPEM} {
		if len(b) == 0 {
			continue
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			tb.Fatal(err)
		}
		if err := os.Chown(p, 1001, 0); err != nil {
			tb.Fatal(err)
		}
		mounts = append(mounts, "-v", p+":/etc/foreman/"+name+":ro")
	}
	docker("run", "-d", "--name", prefix+"-db", "--network", "host", "--label", "malleable.test=foreman",
		"-e", "POSTGRES_USER=foreman", "-e", "POSTGRES_PASSWORD="+dbPW, "-e", "POSTGRES_DB=foreman",
		PostgresImage, "-c", fmt.Sprintf("port=%d", dbPort), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off")
	args := []string{"run", "-d", "--name", prefix + "-foreman", "--network", "host", "--label", "malleable.test=foreman",
		"-e", fmt.Sprintf("DATABASE_URL=postgresql://foreman:%s@127.0.0.1:%d/foreman", dbPW, dbPort),
		"-e", "SEED_ADMIN_USER=admin", "-e", "SEED_ADMIN_PASSWORD=" + opts.AdminPassword,
		"-e", "SEED_ORGANIZATION=" + opts.Organization, "-e", "SEED_LOCATION=" + opts.Location,
		"-e", "ENCRYPTION_KEY=" + hex.EncodeToString(suffix) + strings.Repeat("0", 24), "-e", "FOREMAN_DB_WAIT=120"}
	args = append(args, mounts...)
	args = append(args, ForemanImage, "/bin/sh", "-c",
		fmt.Sprintf("bin/rails db:migrate && bin/rails db:seed && exec bin/rails server -e production -b 127.0.0.1 -p %d", webPort))
	docker(args...)

	in := &Instance{URL: fmt.Sprintf("http://127.0.0.1:%d", webPort), User: "admin", Password: opts.AdminPassword,
		Organization: opts.Organization, Location: opts.Location, Real: true}
	hc := &http.Client{Timeout: 10 * time.Second}
	start := time.Now()
	for {
		resp, err := hc.Get(in.URL + "/api/v2/ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Since(start) > realStartLimit {
			tb.Fatalf("Foreman did not answer /api/v2/ping within %s (last: %v)", realStartLimit, err)
		}
		if state := docker("inspect", "-f", "{{.State.Status}}", prefix+"-foreman"); state != "running" {
			tb.Fatalf("Foreman's container is %s", state)
		}
		time.Sleep(2 * time.Second)
	}
	tb.Logf("real Foreman 3.12 answered /api/v2/ping after %s (%s)", time.Since(start).Round(time.Second), in.URL)
	return in
}

// freePort returns a loopback TCP port free at the time of asking.
func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
