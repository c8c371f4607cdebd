package docker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
)

// File is a file copied into a container before it starts (with
// CopyToContainer): how secrets reach containers, never through the
// environment or labels.
type File struct {
	Path    string      // absolute path inside the container
	Content []byte      // the bytes; only their hash reaches the spec label
	Mode    os.FileMode // permission bits; 0 means 0400
	UID     int         // owner inside the container (the container's user)
	GID     int
}

// Mount is a bind mount of a host path (Source absolute) or a named
// volume (Source a volume name). Named volumes outlive their containers:
// Remove deletes only anonymous ones.
type Mount struct {
	Source   string // host path (absolute) or volume name
	Target   string // container path, absolute
	ReadOnly bool
}

// Health is a container health check run by the Engine.
type Health struct {
	Cmd         []string // exec form, without "CMD"
	Interval    time.Duration
	Timeout     time.Duration
	StartPeriod time.Duration
	Retries     int
}

// Attachment connects a container to a network by ID, with DNS aliases.
type Attachment struct {
	NetworkID string
	Aliases   []string
}

// ContainerSpec is everything that makes a container what it is. Its hash
// is the malleable.spec label: Ensure replaces a container whose label
// differs and leaves one alone whose label matches.
type ContainerSpec struct {
	Tenant     string // "" for an appliance-wide (shared) container
	Role       string // e.g. "foreman", "smart-proxy", "postgres"
	Name       string // container name
	Image      string
	Entrypoint []string // nil keeps the image's
	Cmd        []string // nil keeps the image's
	Env        []string // KEY=value; never secrets (use Files)
	Mounts     []Mount
	// Files are copied in before the first start. With ReadOnlyRootfs each
	// file's directory becomes an anonymous volume so that the copy is allowed.
	Files           []File
	Tmpfs           []string // writable tmpfs paths (for a read-only rootfs)
	User            string   // "uid[:gid]"; "" keeps the image's
	ReadOnlyRootfs  bool
	CapDrop         []string // e.g. ["ALL"]
	CapAdd          []string
	NoNewPrivileges bool
	MemoryBytes     int64
	PidsLimit       int64
	Restart         string // "", "no", "unless-stopped", "always", "on-failure"
	Health          *Health
	// Networks: the first is the primary (the one the container is
	// created on); the others are connected before it starts.
	Networks []Attachment
	// PublishLocal are container TCP ports published on 127.0.0.1 with a
	// random host port (read back in Container.Ports). Docker publishes
	// nothing from an internal network, so the runtime also attaches the
	// container to the tenant's publish network (no ICC, no masquerade).
	PublishLocal []int
	// HostPorts pins the host port of a PublishLocal port (container port
	// -> host port on 127.0.0.1), so that a recreated container answers
	// where its users were told; unpinned ports are random.
	HostPorts map[int]int
}

// Container is what the Engine reports about one of our containers.
type Container struct {
	ID        string
	Name      string
	Tenant    string
	Role      string
	Image     string
	State     string // created, running, exited, dead, ...
	Health    string // starting, healthy, unhealthy; "" without a health check
	StartedAt time.Time
	ExitCode  int               // of the last run, when State is exited or dead
	Restarts  int               // restarts by the Engine's restart policy
	Ports     map[int]int       // container TCP port -> host port on 127.0.0.1
	IPs       map[string]string // network ID -> the container's IPv4 on it
}

// Action says what Ensure did.
type Action string

// Ensure's outcomes.
const (
	Created   Action = "created"   // there was none; a new one runs
	Adopted   Action = "adopted"   // a concurrent caller made it; we took it as it is
	Replaced  Action = "replaced"  // its spec changed: removed and created anew
	Unchanged Action = "unchanged" // it already ran with this spec; not touched
	Started   Action = "started"   // it existed with this spec, stopped; started again
)

// ensureAttempts bounds Ensure's create/inspect loop against racing callers.
const ensureAttempts = 8

// createdGrace is how long a container found in state "created" is given
// to be started by whoever is creating it before it counts as abandoned.
const createdGrace = 20 * time.Second

func (s ContainerSpec) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("container spec %s: %s: %w", s.Name, fmt.Sprintf(format, a...), ErrInvalid)
	}
	if s.Tenant != "" {
		if err := checkTenant(s.Tenant); err != nil {
			return err
		}
	}
	switch {
	case !nameRE.MatchString(s.Name):
		return bad("name must match %s", nameRE)
	case !tenantRE.MatchString(s.Role):
		return bad("role %q must match %s", s.Role, tenantRE)
	case s.Image == "":
		return bad("no image")
	case len(s.Networks) == 0:
		return bad("no network")
	case len(s.PublishLocal) > 0 && s.Tenant == "":
		return bad("a shared container cannot publish ports")
	}
	switch s.Restart {
	case "", "no", "unless-stopped", "always", "on-failure":
	default:
		return bad("restart policy %q", s.Restart)
	}
	for _, f := range s.Files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || path.Dir(f.Path) == "/" {
			return bad("file path %q must be absolute, clean and not at the root", f.Path)
		}
	}
	for _, m := range s.Mounts {
		if !path.IsAbs(m.Target) || (!path.IsAbs(m.Source) && !nameRE.MatchString(m.Source)) {
			return bad("mount %q -> %q: want an absolute host path or a volume name, and an absolute target", m.Source, m.Target)
		}
	}
	for _, p := range s.PublishLocal {
		if p < 1 || p > 65535 {
			return bad("port %d", p)
		}
	}
	for c, h := range s.HostPorts {
		if !slices.Contains(s.PublishLocal, c) || h < 1 || h > 65535 {
			return bad("host port %d for %d: want a port of a published one", h, c)
		}
	}
	for _, e := range s.Env {
		if !strings.Contains(e, "=") {
			return bad("env %q is not KEY=value", e)
		}
	}
	return nil
}

// hash is the spec's identity: file contents enter only as their SHA-256.
func (s ContainerSpec) hash() string {
	c := s
	c.Files = nil
	type fileID struct {
		Path     string
		Sum      string
		Mode     os.FileMode
		UID, GID int
	}
	var files []fileID
	for _, f := range s.Files {
		sum := sha256.Sum256(f.Content)
		files = append(files, fileID{f.Path, hex.EncodeToString(sum[:]), f.Mode, f.UID, f.GID})
	}
	b, _ := json.Marshal(struct {
		Spec  ContainerSpec
		Files []fileID
	}{c, files}) // cannot fail: plain data
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// Ensure makes the container described by spec run: it adopts a running
// container whose spec label matches (never restarting it), replaces one
// whose spec changed, starts a stopped one, and creates a missing one.
// Concurrent calls with one spec end with one container: in this
// process they take turns by name; other processes' races are met by the
// create-or-adopt loop.
func (r *Runtime) Ensure(ctx context.Context, spec ContainerSpec) (Container, Action, error) {
	if err := spec.validate(); err != nil {
		return Container{}, "", err
	}
	mu, _ := r.ctrLocks.LoadOrStore(spec.Name, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	log := r.log.With("container", spec.Name, "tenant", spec.Tenant, "role", spec.Role)
	want := spec.hash()
	var extra []Attachment
	if len(spec.PublishLocal) > 0 {
		pub, err := r.ensurePublishNetwork(ctx, spec.Tenant)
		if err != nil {
			return Container{}, "", err
		}
		extra = append(extra, Attachment{NetworkID: pub.ID})
	}
	replaced, lostRace := false, false
	for range ensureAttempts {
		in, err := r.inspect(ctx, spec.Name)
		if errors.Is(err, ErrNotFound) {
			id, err := r.create(ctx, spec, want, extra)
			if cerrdefs.IsConflict(err) {
				lostRace = true
				continue
			}
			if err != nil {
				return Container{}, "", err
			}
			c, err := r.inspectContainer(ctx, id)
			act := Created
			if replaced {
				act = Replaced
			}
			if err == nil {
				log.Info("container "+string(act), "id", short(id))
			}
			return c, act, err
		}
		if err != nil {
			return Container{}, "", err
		}
		if !r.ours(in.Config.Labels) {
			return Container{}, "", fmt.Errorf("container %s: %w", spec.Name, ErrForeign)
		}
		if in.Config.Labels[LabelSpec] != want {
			log.Info("container spec changed; replacing", "id", short(in.ID))
			if err := r.remove(ctx, in.ID); err != nil {
				return Container{}, "", err
			}
			replaced = true
			continue
		}
		switch in.State.Status {
		case "running", "restarting":
			act := Unchanged
			if lostRace {
				act = Adopted
			}
			c, err := r.inspectContainer(ctx, in.ID)
			return c, act, err
		case "created":
			// Someone is copying files in and will start it, or crashed
			// doing so: give it a grace period, then treat it as abandoned.
			lostRace = true
			if started, err := r.waitLeavesCreated(ctx, in.ID); err != nil || started {
				if err != nil {
					return Container{}, "", err
				}
				continue
			}
			log.Warn("container stuck in created; replacing", "id", short(in.ID))
			if err := r.remove(ctx, in.ID); err != nil {
				return Container{}, "", err
			}
			replaced = true
		default: // exited, dead, paused
			if err := r.start(ctx, in.ID); err != nil {
				log.Warn("restart of a stopped container failed; replacing", "id", short(in.ID), "err", err)
				if err := r.remove(ctx, in.ID); err != nil {
					return Container{}, "", err
				}
				replaced = true
				continue
			}
			log.Info("container started", "id", short(in.ID))
			c, err := r.inspectContainer(ctx, in.ID)
			return c, Started, err
		}
	}
	return Container{}, "", fmt.Errorf("ensure container %s: no stable outcome after %d attempts", spec.Name, ensureAttempts)
}

// waitLeavesCreated polls a container in state "created" for up to
// createdGrace; it reports whether it left that state (or vanished).
func (r *Runtime) waitLeavesCreated(ctx context.Context, id string) (bool, error) {
	deadline := time.Now().Add(createdGrace)
	for time.Now().Before(deadline) {
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return false, err
		}
		in, err := r.inspect(ctx, id)
		if errors.Is(err, ErrNotFound) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		if in.State.Status != "created" {
			return true, nil
		}
	}
	return false, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// inspect returns the raw inspect answer for an ID or name; ErrNotFound
// when there is none.
func (r *Runtime) inspect(ctx context.Context, idOrName string) (container.InspectResponse, error) {
	cctx, cancel := call(ctx, callTimeout)
	defer cancel()
	in, err := r.eng.ContainerInspect(cctx, idOrName)
	if cerrdefs.IsNotFound(err) {
		return in, fmt.Errorf("container %s: %w", idOrName, ErrNotFound)
	}
	if err != nil {
		return in, fmt.Errorf("inspect container %s: %w", idOrName, err)
	}
	return in, nil
}

// Inspect returns what the Engine reports about a container (any owner);
// ErrNotFound when it does not exist.
func (r *Runtime) Inspect(ctx context.Context, idOrName string) (Container, error) {
	return r.inspectContainer(ctx, idOrName)
}

func (r *Runtime) inspectContainer(ctx context.Context, id string) (Container, error) {
	in, err := r.inspect(ctx, id)
	if err != nil {
		return Container{}, err
	}
	return toContainer(in), nil
}

func toContainer(in container.InspectResponse) Container {
	c := Container{
		ID: in.ID, Name: strings.TrimPrefix(in.Name, "/"),
		Ports: map[int]int{}, IPs: map[string]string{},
	}
	if in.Config != nil {
		c.Tenant, c.Role, c.Image = in.Config.Labels[LabelTenant], in.Config.Labels[LabelRole], in.Config.Image
	}
	c.Restarts = in.RestartCount
	if in.State != nil {
		c.State = string(in.State.Status)
		if in.State.Health != nil {
			c.Health = string(in.State.Health.Status)
		}
		c.StartedAt, _ = time.Parse(time.RFC3339Nano, in.State.StartedAt)
		c.ExitCode = in.State.ExitCode
	}
	if in.NetworkSettings != nil {
		for port, binds := range in.NetworkSettings.Ports {
			for _, b := range binds {
				var hp int
				if _, err := fmt.Sscan(b.HostPort, &hp); err == nil && b.HostIP == "127.0.0.1" {
					c.Ports[port.Int()] = hp
				}
			}
		}
		for _, ep := range in.NetworkSettings.Networks {
			if ep != nil && ep.NetworkID != "" {
				c.IPs[ep.NetworkID] = ep.IPAddress
			}
		}
	}
	return c
}
