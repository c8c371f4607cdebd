package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/go-connections/nat"
)

// create makes, fills and starts a container. A conflict on the name is
// returned as is (the caller adopts); any later failure removes the
// half-made container so that the next Ensure starts clean.
func (r *Runtime) create(ctx context.Context, s ContainerSpec, hash string, extra []Attachment) (string, error) {
	cfg, host, netCfg := r.configs(s, hash)
	cctx, cancel := call(ctx, callTimeout)
	resp, err := r.eng.ContainerCreate(cctx, cfg, host, netCfg, nil, s.Name)
	cancel()
	if err != nil {
		if cerrdefs.IsConflict(err) {
			return "", err
		}
		return "", fmt.Errorf("create container %s: %w", s.Name, err)
	}
	if err := r.fill(ctx, resp.ID, s, extra); err != nil {
		if rerr := r.remove(context.WithoutCancel(ctx), resp.ID); rerr != nil {
			r.log.Warn("remove half-made container", "container", s.Name, "err", rerr)
		}
		return "", err
	}
	return resp.ID, nil
}

// fill connects the secondary networks, copies the files and starts.
func (r *Runtime) fill(ctx context.Context, id string, s ContainerSpec, extra []Attachment) error {
	for _, a := range append(append([]Attachment(nil), s.Networks[1:]...), extra...) {
		cctx, cancel := call(ctx, callTimeout)
		err := r.eng.NetworkConnect(cctx, a.NetworkID, id, &network.EndpointSettings{Aliases: a.Aliases})
		cancel()
		if err != nil {
			return fmt.Errorf("connect %s to network %s: %w", s.Name, a.NetworkID, err)
		}
	}
	for dir, files := range filesByDir(s.Files) {
		base, missing, err := r.existingAncestor(ctx, id, dir)
		if err != nil {
			return err
		}
		archive, err := tarFiles(missing, files)
		if err != nil {
			return fmt.Errorf("files for %s: %w", s.Name, err)
		}
		cctx, cancel := call(ctx, copyTimeout)
		err = r.eng.CopyToContainer(cctx, id, base, bytes.NewReader(archive), container.CopyToContainerOptions{})
		cancel()
		if err != nil {
			return fmt.Errorf("copy files into %s:%s: %w", s.Name, dir, err)
		}
	}
	return r.start(ctx, id)
}

func (r *Runtime) start(ctx context.Context, id string) error {
	cctx, cancel := call(ctx, callTimeout)
	defer cancel()
	if err := r.eng.ContainerStart(cctx, id, container.StartOptions{}); err != nil {
		return fmt.Errorf("start container %s: %w", short(id), err)
	}
	return nil
}

func (r *Runtime) configs(s ContainerSpec, hash string) (*container.Config, *container.HostConfig, *network.NetworkingConfig) {
	labels := map[string]string{LabelOwner: r.owner, LabelRole: s.Role, LabelSpec: hash}
	if s.Tenant != "" {
		labels[LabelTenant] = s.Tenant
	}
	cfg := &container.Config{
		Image: s.Image, Entrypoint: s.Entrypoint, Cmd: s.Cmd, Env: s.Env, User: s.User, Labels: labels,
		ExposedPorts: nat.PortSet{},
	}
	if h := s.Health; h != nil {
		cfg.Healthcheck = &container.HealthConfig{
			Test:     append([]string{"CMD"}, h.Cmd...),
			Interval: h.Interval, Timeout: h.Timeout, StartPeriod: h.StartPeriod, Retries: h.Retries,
		}
	}
	host := &container.HostConfig{
		NetworkMode:    container.NetworkMode(s.Networks[0].NetworkID),
		ReadonlyRootfs: s.ReadOnlyRootfs,
		CapDrop:        s.CapDrop,
		CapAdd:         s.CapAdd,
		RestartPolicy:  container.RestartPolicy{Name: container.RestartPolicyMode(s.Restart)},
		PortBindings:   nat.PortMap{},
	}
	if s.NoNewPrivileges {
		host.SecurityOpt = []string{"no-new-privileges"}
	}
	host.Memory = s.MemoryBytes
	if s.PidsLimit > 0 {
		pl := s.PidsLimit
		host.PidsLimit = &pl
	}
	for _, m := range s.Mounts {
		typ := mount.TypeBind
		if !path.IsAbs(m.Source) {
			typ = mount.TypeVolume
		}
		host.Mounts = append(host.Mounts, mount.Mount{Type: typ, Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly})
	}
	if s.ReadOnlyRootfs {
		// A read-only rootfs refuses CopyToContainer except into volumes.
		for dir := range filesByDir(s.Files) {
			host.Mounts = append(host.Mounts, mount.Mount{Type: mount.TypeVolume, Target: dir})
		}
	}
	if len(s.Tmpfs) > 0 {
		host.Tmpfs = map[string]string{}
		for _, t := range s.Tmpfs {
			host.Tmpfs[t] = "rw,noexec,nosuid,size=64m"
		}
	}
	for _, p := range s.PublishLocal {
		port := nat.Port(strconv.Itoa(p) + "/tcp")
		cfg.ExposedPorts[port] = struct{}{}
		hostPort := ""
		if h := s.HostPorts[p]; h != 0 {
			hostPort = strconv.Itoa(h)
		}
		host.PortBindings[port] = []nat.PortBinding{{HostIP: "127.0.0.1", HostPort: hostPort}}
	}
	primary := s.Networks[0]
	netCfg := &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
		primary.NetworkID: {Aliases: primary.Aliases},
	}}
	return cfg, host, netCfg
}

// existingAncestor finds the deepest existing directory of dir in the
// container (the copy's destination must exist) and the missing path
// below it, which the archive then creates (root-owned, 0755).
func (r *Runtime) existingAncestor(ctx context.Context, id, dir string) (base, missing string, err error) {
	for base = dir; base != "/"; base = path.Dir(base) {
		cctx, cancel := call(ctx, callTimeout)
		_, err := r.eng.ContainerStatPath(cctx, id, base)
		cancel()
		if err == nil {
			break
		}
		if !cerrdefs.IsNotFound(err) {
			return "", "", fmt.Errorf("stat %s in container %s: %w", base, short(id), err)
		}
	}
	missing = strings.TrimPrefix(strings.TrimPrefix(dir, base), "/")
	return base, missing, nil
}

func filesByDir(files []File) map[string][]File {
	out := map[string][]File{}
	for _, f := range files {
		d := path.Dir(f.Path)
		out[d] = append(out[d], f)
	}
	return out
}

// tarFiles builds an archive of the missing directories (a relative
// path, possibly "") and the files within them, owners and modes as given.
func tarFiles(missing string, files []File) ([]byte, error) {
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if missing != "" {
		parts := strings.Split(missing, "/")
		for i := range parts {
			h := &tar.Header{Name: strings.Join(parts[:i+1], "/") + "/", Mode: 0o755, ModTime: time.Unix(0, 0), Typeflag: tar.TypeDir}
			if err := tw.WriteHeader(h); err != nil {
				return nil, err
			}
		}
	}
	for _, f := range files {
		mode := f.Mode.Perm()
		if mode == 0 {
			mode = 0o400
		}
		h := &tar.Header{
			Name: path.Join(missing, path.Base(f.Path)), Mode: int64(mode), Size: int64(len(f.Content)),
			Uid: f.UID, Gid: f.GID, ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg,
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Content); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
