package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
)

// testEnv is one real engine for a test: a runtime with a random owner
// (so parallel test runs and other users of the engine never meet) and a
// raw client for the checks the runtime does not offer.
type testEnv struct {
	rt  *Runtime
	raw *client.Client
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	owner := "mt" + hex.EncodeToString(b)
	rt, err := New(ctx, Options{Owner: owner, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Skipf("SKIP LOUDLY: no Docker engine answers (%v): the runtime's tests need a real engine", err)
	}
	raw, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	raw.NegotiateAPIVersion(ctx)
	e := &testEnv{rt: rt, raw: raw}
	t.Cleanup(func() {
		e.sweep(t)
		_ = rt.Close()
		_ = raw.Close()
	})
	return e
}

// sweep removes whatever carries this test's owner label.
func (e *testEnv) sweep(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f := filters.NewArgs(filters.Arg("label", LabelOwner+"="+e.rt.owner))
	cs, _ := e.raw.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	for _, c := range cs {
		_ = e.raw.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
	}
	ns, _ := e.raw.NetworkList(ctx, network.ListOptions{Filters: f})
	for _, n := range ns {
		if err := e.raw.NetworkRemove(ctx, n.ID); err != nil {
			t.Logf("sweep network %s: %v", n.Name, err)
		}
	}
}

// count returns how many containers and networks carry the owner label
// (and the tenant label when tenant is not "").
func (e *testEnv) count(t *testing.T, tenant string) (containers, networks int) {
	t.Helper()
	f := filters.NewArgs(filters.Arg("label", LabelOwner+"="+e.rt.owner))
	if tenant != "" {
		f.Add("label", LabelTenant+"="+tenant)
	}
	cs, err := e.raw.ContainerList(context.Background(), container.ListOptions{All: true, Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	ns, err := e.raw.NetworkList(context.Background(), network.ListOptions{Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	return len(cs), len(ns)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// probeImage builds the tests' FROM scratch image around a static Go
// probe (testdata/probe): there is no registry and no busybox here.
func (e *testEnv) probeImage(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "probe")
	goBin := "go" // on PATH, as for `go test` itself
	cmd := exec.Command(goBin, "build", "-o", bin, "./testdata/probe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build probe: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	tag := e.rt.owner + "/probe:1"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := e.rt.BuildImage(ctx, tag, map[string]File{"probe": {Content: data, Mode: 0o755}},
		"FROM scratch\nCOPY probe /probe\nENTRYPOINT [\"/probe\"]\n"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		e.sweep(t)
		if _, err := e.raw.ImageRemove(ctx, tag, image.RemoveOptions{Force: true, PruneChildren: true}); err != nil {
			t.Logf("remove image %s: %v", tag, err)
		}
	})
	return tag
}

// serveSpec is a probe serving TCP 8080 on the given networks, healthy
// once it answers itself.
func serveSpec(tenant, name, image string, nets ...Attachment) ContainerSpec {
	return ContainerSpec{
		Tenant: tenant, Role: "probe", Name: name, Image: image,
		Cmd: []string{"serve", ":8080"}, User: "65534:65534",
		ReadOnlyRootfs: true, CapDrop: []string{"ALL"}, NoNewPrivileges: true,
		MemoryBytes: 32 << 20, PidsLimit: 32, Restart: "unless-stopped",
		Health:   &Health{Cmd: []string{"/probe", "dial", "127.0.0.1:8080"}, Interval: 500 * time.Millisecond, Timeout: 2 * time.Second, Retries: 3},
		Networks: nets,
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func mustErrIs(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("err = %v, want %v", err, target)
	}
}

func (e *testEnv) dial(t *testing.T, from Container, addr string) (string, int) {
	t.Helper()
	out, errOut, code, err := e.rt.Exec(ctxT(t, 30*time.Second), from.ID, []string{"/probe", "dial", addr})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(out, errOut), code
}

var (
	networkInspectOpts = network.InspectOptions{}
	networkCreateOpts  = network.CreateOptions{Driver: "bridge"}
)
