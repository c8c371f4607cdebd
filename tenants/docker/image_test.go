package docker

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"
)

// TestProxyImage builds the smart-proxy image around the real appliance
// binary and checks what the Engine recorded for it.
func TestProxyImage(t *testing.T) {
	e := newTestEnv(t)
	ctx := ctxT(t, 5*time.Minute)
	bin := filepath.Join(t.TempDir(), "malleable")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "../../cmd/malleable")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build malleable: %v\n%s", err, out)
	}
	tag, id, err := e.rt.ProxyImage(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = e.raw.ImageRemove(ctx, tag, image.RemoveOptions{Force: true, PruneChildren: true}) })
	in, err := e.raw.ImageInspect(ctx, tag)
	if err != nil || in.ID != id {
		t.Fatalf("inspect %s: %v (id %s, want %s)", tag, err, in.ID, id)
	}
	c := in.Config
	if c.User != "65534:65534" || !slices.Equal(c.Entrypoint, []string{"/malleable", "smart-proxy"}) ||
		c.Healthcheck == nil || !slices.Equal(c.Healthcheck.Test, []string{"CMD", "/malleable", "smart-proxy", "health"}) ||
		!slices.Contains(c.Env, "MALLEABLE_SMART_PROXY_CONFIG="+ProxyConfigPath) {
		t.Errorf("image config: user %q entrypoint %q health %+v env %q", c.User, c.Entrypoint, c.Healthcheck, c.Env)
	}
	if c.Labels[LabelOwner] != "" {
		t.Error("the image carries the owner label: every container from it would look like ours")
	}
	// Same binary: the existing image, no rebuild.
	if _, id2, err := e.rt.ProxyImage(ctx, bin); err != nil || id2 != id {
		t.Errorf("second ProxyImage: %s, %v; want %s", id2, err, id)
	}
	// A dynamically linked binary cannot run FROM scratch.
	if ls, err := exec.LookPath("ls"); err == nil {
		_, _, err := e.rt.ProxyImage(ctx, ls)
		mustErrIs(t, err, ErrInvalid)
	}
}
