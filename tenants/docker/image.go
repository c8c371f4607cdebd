package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/build"
)

// ProxyConfigPath is where the smart-proxy image expects its INI (through
// MALLEABLE_SMART_PROXY_CONFIG, read by both `smart-proxy` and its health check).
const ProxyConfigPath = "/etc/malleable/smart-proxy.ini"

// proxyDockerfile wraps the appliance's static binary: no shell, no
// libraries, user nobody, the binary's own health subcommand.
const proxyDockerfile = `FROM scratch
COPY malleable /malleable
USER 65534:65534
ENV MALLEABLE_SMART_PROXY_CONFIG=` + ProxyConfigPath + `
ENTRYPOINT ["/malleable", "smart-proxy"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 CMD ["/malleable", "smart-proxy", "health"]
`

// buildTimeout bounds a build when the caller's context has no sooner deadline.
const buildTimeout = 10 * time.Minute

// labelBuiltBy marks images the runtime built, with the owner.
const labelBuiltBy = "malleable.built-by"

// BuildImage builds an image from an in-memory context: files by path
// within the context (Mode 0 means 0644) and the Dockerfile's text. It
// returns the image ID.
func (r *Runtime) BuildImage(ctx context.Context, tag string, files map[string]File, dockerfile string) (string, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for name := range files {
		if name == "Dockerfile" || !validContextPath(name) {
			return "", fmt.Errorf("build %s: context path %q: %w", tag, name, ErrInvalid)
		}
		names = append(names, name)
	}
	sort.Strings(names)
	add := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(data)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := add("Dockerfile", 0o644, []byte(dockerfile)); err != nil {
		return "", fmt.Errorf("build %s: %w", tag, err)
	}
	for _, name := range names {
		f := files[name]
		mode := int64(f.Mode.Perm())
		if mode == 0 {
			mode = 0o644
		}
		if err := add(name, mode, f.Content); err != nil {
			return "", fmt.Errorf("build %s: %w", tag, err)
		}
	}
	if err := tw.Close(); err != nil {
		return "", fmt.Errorf("build %s: %w", tag, err)
	}
	ctx, cancel := context.WithTimeout(ctx, buildTimeout)
	defer cancel()
	resp, err := r.eng.ImageBuild(ctx, &buf, build.ImageBuildOptions{
		Tags: []string{tag}, Remove: true, ForceRemove: true,
		// Not LabelOwner: containers inherit image labels.
		Labels: map[string]string{labelBuiltBy: r.owner},
	})
	if err != nil {
		return "", fmt.Errorf("build %s: %w", tag, err)
	}
	defer resp.Body.Close()
	if err := drainBuild(resp.Body); err != nil {
		return "", fmt.Errorf("build %s: %w", tag, err)
	}
	id, err := r.imageID(ctx, tag)
	if err != nil {
		return "", err
	}
	r.log.Info("image built", "tag", tag, "id", short(id))
	return id, nil
}

// validContextPath accepts a clean relative context path.
func validContextPath(name string) bool {
	return name != "" && name != "." && !path.IsAbs(name) && path.Clean(name) == name && name[0] != '.'
}

// drainBuild reads the build's JSON stream to its end (the build runs
// only as long as it is read) and returns the first error it reports.
func drainBuild(body io.Reader) error {
	dec := json.NewDecoder(body)
	for {
		var m struct {
			Error       string `json:"error"`
			ErrorDetail struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("read build output: %w", err)
		}
		if m.Error != "" {
			return errors.New(m.Error)
		}
	}
}

func (r *Runtime) imageID(ctx context.Context, ref string) (string, error) {
	cctx, cancel := call(ctx, callTimeout)
	defer cancel()
	in, err := r.eng.ImageInspect(cctx, ref)
	if cerrdefs.IsNotFound(err) {
		return "", fmt.Errorf("image %s: %w", ref, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("inspect image %s: %w", ref, err)
	}
	return in.ID, nil
}

// ImageID returns the ID of a local image; ErrNotFound when absent.
func (r *Runtime) ImageID(ctx context.Context, ref string) (string, error) {
	return r.imageID(ctx, ref)
}

// ProxyImage builds (once per binary) the smart-proxy image FROM scratch
// around the appliance's static executable at binaryPath (built with
// CGO_ENABLED=0): user 65534, entrypoint `malleable smart-proxy`, health
// check `malleable smart-proxy health`, configuration read from
// ProxyConfigPath (copy it in as a File). The tag is
// "<owner>/smart-proxy:<first 12 hex of the binary's SHA-256>".
func (r *Runtime) ProxyImage(ctx context.Context, binaryPath string) (tag, id string, err error) {
	bin, err := os.ReadFile(binaryPath)
	if err != nil {
		return "", "", fmt.Errorf("proxy image: %w", err)
	}
	if err := checkStatic(bin); err != nil {
		return "", "", fmt.Errorf("proxy image from %s: %w", binaryPath, err)
	}
	sum := sha256.Sum256(bin)
	tag = r.owner + "/smart-proxy:" + hex.EncodeToString(sum[:6])
	if id, err := r.imageID(ctx, tag); err == nil {
		return tag, id, nil
	}
	id, err = r.BuildImage(ctx, tag, map[string]File{"malleable": {Content: bin, Mode: 0o755}}, proxyDockerfile)
	return tag, id, err
}

// checkStatic refuses anything but a statically linked ELF executable:
// a FROM scratch image has no loader or libraries.
func checkStatic(bin []byte) error {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return fmt.Errorf("not an ELF executable: %w", ErrInvalid)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("dynamically linked (build with CGO_ENABLED=0): %w", ErrInvalid)
		}
	}
	return nil
}
