// Package docker is Malleable's container runtime over the Docker Engine
// API: per-tenant internal networks, labelled containers ensured from a
// spec (create, adopt, replace, start), files copied into containers,
// exec, health waits, and images built from in-memory contexts. It is the
// only package that imports the Docker SDK; it knows nothing of Foreman.
package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Labels put on every network and container the runtime creates.
const (
	LabelOwner  = "malleable.owner"
	LabelTenant = "malleable.tenant"
	LabelRole   = "malleable.role"
	LabelSpec   = "malleable.spec"
	// labelKind tells tenant networks ("tenant"), publish networks
	// ("publish") and shared networks ("shared") apart.
	labelKind = "malleable.kind"
)

// DefaultOwner is the owner label value when Options.Owner is empty.
const DefaultOwner = "malleable"

// Timeouts of single Engine calls. Builds and health waits take the
// caller's context instead (they are long by nature).
const (
	callTimeout = 30 * time.Second
	copyTimeout = 60 * time.Second
)

// Sentinel errors callers branch on.
var (
	// ErrInvalid reports a spec or name the runtime refuses; nothing was changed.
	ErrInvalid = errors.New("invalid")
	// ErrNotFound reports a container or network that does not exist.
	ErrNotFound = errors.New("not found")
	// ErrForeign reports a name taken by an object the runtime does not own.
	ErrForeign = errors.New("name taken by an object we do not own")
	// ErrUnhealthy reports a container that became unhealthy or exited while waited for.
	ErrUnhealthy = errors.New("container unhealthy")
)

var (
	// tenantRE is the appliance's tenant-name rule, checked again here.
	tenantRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,30}$`)
	// ownerRE has no dash so that "<owner>-<tenant>" never equals "<owner>--<shared>".
	ownerRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,30}$`)
	nameRE  = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)
)

// engine is the subset of the Docker client the runtime uses; declaring it
// here keeps a later move to github.com/moby/moby/client local.
type engine interface {
	Ping(ctx context.Context) (types.Ping, error)
	NetworkCreate(ctx context.Context, name string, options network.CreateOptions) (network.CreateResponse, error)
	NetworkList(ctx context.Context, options network.ListOptions) ([]network.Summary, error)
	NetworkInspect(ctx context.Context, id string, options network.InspectOptions) (network.Inspect, error)
	NetworkRemove(ctx context.Context, id string) error
	NetworkConnect(ctx context.Context, networkID, containerID string, config *network.EndpointSettings) error
	NetworkDisconnect(ctx context.Context, networkID, containerID string, force bool) error
	ContainerCreate(ctx context.Context, config *container.Config, hostConfig *container.HostConfig, networkingConfig *network.NetworkingConfig, platform *ocispec.Platform, name string) (container.CreateResponse, error)
	ContainerStart(ctx context.Context, id string, options container.StartOptions) error
	ContainerInspect(ctx context.Context, id string) (container.InspectResponse, error)
	ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error)
	ContainerLogs(ctx context.Context, id string, options container.LogsOptions) (io.ReadCloser, error)
	ContainerRemove(ctx context.Context, id string, options container.RemoveOptions) error
	ContainerStatPath(ctx context.Context, id, path string) (container.PathStat, error)
	CopyToContainer(ctx context.Context, id, dstPath string, content io.Reader, options container.CopyToContainerOptions) error
	ContainerExecCreate(ctx context.Context, id string, options container.ExecOptions) (container.ExecCreateResponse, error)
	ContainerExecAttach(ctx context.Context, execID string, config container.ExecAttachOptions) (types.HijackedResponse, error)
	ContainerExecInspect(ctx context.Context, execID string) (container.ExecInspect, error)
	VolumeRemove(ctx context.Context, volumeID string, force bool) error
	ImageBuild(ctx context.Context, buildContext io.Reader, options build.ImageBuildOptions) (build.ImageBuildResponse, error)
	ImageInspect(ctx context.Context, imageID string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
	Close() error
}

// Options configure a Runtime.
type Options struct {
	// Host is the Engine address (unix:///var/run/docker.sock, tcp://...);
	// empty means the environment's default (DOCKER_HOST or the local socket).
	Host string
	// Owner is the value of the malleable.owner label on everything the
	// runtime creates and the only value it adopts or removes; default "malleable".
	Owner string
	// Logger receives one line per change; default slog.Default().
	Logger *slog.Logger
}

// Runtime manages one owner's networks and containers on one Docker
// Engine. It is safe for concurrent use.
type Runtime struct {
	eng   engine
	owner string
	log   *slog.Logger
	// netLocks serialise this process's creators of one network: old
	// engines (API < 1.44) do not refuse a second network of one name.
	netLocks sync.Map // network name -> *sync.Mutex
	ctrLocks sync.Map // container name -> *sync.Mutex
}

// New connects to the Engine, negotiating the API version, and checks
// that it answers.
func New(ctx context.Context, o Options) (*Runtime, error) {
	if o.Owner == "" {
		o.Owner = DefaultOwner
	}
	if !ownerRE.MatchString(o.Owner) {
		return nil, fmt.Errorf("docker runtime owner %q: %w (want [a-z][a-z0-9]{0,30})", o.Owner, ErrInvalid)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if o.Host != "" {
		opts = append(opts, client.WithHost(o.Host))
	}
	c, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if _, err := c.Ping(cctx); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("ping docker engine: %w", err)
	}
	// Negotiate now: the client's lazy negotiation on first use races
	// between concurrent first calls.
	c.NegotiateAPIVersion(cctx)
	return &Runtime{eng: c, owner: o.Owner, log: o.Logger.With("component", "docker")}, nil
}

// Close releases the client's connections.
func (r *Runtime) Close() error { return r.eng.Close() }

// Owner is the owner label value this runtime manages.
func (r *Runtime) Owner() string { return r.owner }

// call gives one Engine call its own deadline under ctx.
func call(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d)
}

func checkTenant(tenant string) error {
	if !tenantRE.MatchString(tenant) {
		return fmt.Errorf("tenant %q: %w (want [a-z][a-z0-9-]{0,30})", tenant, ErrInvalid)
	}
	return nil
}

// ours tells whether labels mark an object of this runtime's owner.
func (r *Runtime) ours(labels map[string]string) bool {
	return labels[LabelOwner] == r.owner
}
