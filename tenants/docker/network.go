package docker

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
)

// Network kinds (label malleable.kind).
const (
	kindTenant  = "tenant"
	kindPublish = "publish"
	kindShared  = "shared"
)

// Network is a Docker network the runtime owns.
type Network struct {
	ID      string
	Name    string
	Subnet  string // CIDR, e.g. 172.18.0.0/16
	Gateway string // the host's address on the bridge
}

// netKey says which network is meant: the labels that find it and the
// name and options it is created with.
type netKey struct {
	name    string
	labels  map[string]string
	options map[string]string
	intern  bool
}

// EnsureNetwork returns the tenant's internal bridge network, creating it
// if missing. Internal: its containers reach each other and the host's
// address on the bridge, nothing outside, and no other tenant. It is found
// by label and identified by ID; a name conflict with one of ours (a
// concurrent creator) is adopted, one with a foreign network is ErrForeign.
func (r *Runtime) EnsureNetwork(ctx context.Context, tenant string) (Network, error) {
	if err := checkTenant(tenant); err != nil {
		return Network{}, err
	}
	return r.ensureNetwork(ctx, netKey{
		name:   r.owner + "-" + tenant,
		labels: map[string]string{LabelOwner: r.owner, LabelTenant: tenant, labelKind: kindTenant},
		intern: true,
	})
}

// EnsureSharedNetwork returns an internal network owned by no tenant (for
// an appliance-wide service such as the shared PostgreSQL), named
// "<owner>.shared.<name>"; RemoveTenant never touches it.
func (r *Runtime) EnsureSharedNetwork(ctx context.Context, name string) (Network, error) {
	if err := checkTenant(name); err != nil {
		return Network{}, fmt.Errorf("shared network: %w", err)
	}
	return r.ensureNetwork(ctx, netKey{
		name:   r.owner + ".shared." + name,
		labels: map[string]string{LabelOwner: r.owner, LabelRole: name, labelKind: kindShared},
		intern: true,
	})
}

// ensurePublishNetwork returns the tenant's publish network: a bridge
// whose only purpose is to carry ports published on 127.0.0.1 (Docker
// publishes no ports from internal networks). Containers on it cannot talk
// to each other (ICC off) and their traffic is not masqueraded, so it
// gives no route to the outside world.
func (r *Runtime) ensurePublishNetwork(ctx context.Context, tenant string) (Network, error) {
	return r.ensureNetwork(ctx, netKey{
		name:   r.owner + ".pub." + tenant,
		labels: map[string]string{LabelOwner: r.owner, LabelTenant: tenant, labelKind: kindPublish},
		options: map[string]string{
			"com.docker.network.bridge.enable_icc":           "false",
			"com.docker.network.bridge.enable_ip_masquerade": "false",
			"com.docker.network.bridge.host_binding_ipv4":    "127.0.0.1",
		},
	})
}

func (r *Runtime) ensureNetwork(ctx context.Context, k netKey) (Network, error) {
	mu, _ := r.netLocks.LoadOrStore(k.name, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	if n, ok, err := r.findNetwork(ctx, k); err != nil || ok {
		return n, err
	}
	cctx, cancel := call(ctx, callTimeout)
	_, err := r.eng.NetworkCreate(cctx, k.name, network.CreateOptions{
		Driver: "bridge", Internal: k.intern, Labels: k.labels, Options: k.options,
	})
	cancel()
	if err != nil && !cerrdefs.IsConflict(err) && !strings.Contains(err.Error(), "already exists") {
		return Network{}, fmt.Errorf("create network %s: %w", k.name, err)
	}
	if err != nil {
		// Someone else created it first: adopt it if it is ours.
		cctx, cancel := call(ctx, callTimeout)
		in, ierr := r.eng.NetworkInspect(cctx, k.name, network.InspectOptions{})
		cancel()
		if ierr != nil {
			return Network{}, fmt.Errorf("create network %s: %w (then inspect: %v)", k.name, err, ierr)
		}
		if !labelsMatch(in.Labels, k.labels) {
			return Network{}, fmt.Errorf("network %s: %w", k.name, ErrForeign)
		}
	} else {
		r.log.Info("network created", "network", k.name)
	}
	n, ok, err := r.findNetwork(ctx, k)
	if err == nil && !ok {
		err = fmt.Errorf("network %s vanished after create: %w", k.name, ErrNotFound)
	}
	return n, err
}

// findNetwork lists the networks labelled for k; when a racing create on
// an old engine made two, it keeps the oldest and removes the others.
func (r *Runtime) findNetwork(ctx context.Context, k netKey) (Network, bool, error) {
	f := filters.NewArgs()
	for key, v := range k.labels {
		f.Add("label", key+"="+v)
	}
	cctx, cancel := call(ctx, callTimeout)
	list, err := r.eng.NetworkList(cctx, network.ListOptions{Filters: f})
	cancel()
	if err != nil {
		return Network{}, false, fmt.Errorf("list networks %s: %w", k.name, err)
	}
	if len(list) == 0 {
		return Network{}, false, nil
	}
	sort.Slice(list, func(i, j int) bool {
		if !list[i].Created.Equal(list[j].Created) {
			return list[i].Created.Before(list[j].Created)
		}
		return list[i].ID < list[j].ID
	})
	for _, extra := range list[1:] {
		cctx, cancel := call(ctx, callTimeout)
		if err := r.eng.NetworkRemove(cctx, extra.ID); err != nil && !cerrdefs.IsNotFound(err) {
			r.log.Warn("remove duplicate network", "network", k.name, "id", extra.ID, "err", err)
		}
		cancel()
	}
	// The list answer may omit IPAM details; inspect by ID.
	cctx, cancel = call(ctx, callTimeout)
	in, err := r.eng.NetworkInspect(cctx, list[0].ID, network.InspectOptions{})
	cancel()
	if err != nil {
		return Network{}, false, fmt.Errorf("inspect network %s: %w", k.name, err)
	}
	return toNetwork(in), true, nil
}

func toNetwork(in network.Inspect) Network {
	n := Network{ID: in.ID, Name: in.Name}
	if len(in.IPAM.Config) > 0 {
		n.Subnet, n.Gateway = in.IPAM.Config[0].Subnet, in.IPAM.Config[0].Gateway
	}
	return n
}

func labelsMatch(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// RemoveNetwork removes one of our networks by ID; a missing network is
// not an error. A network that still has containers fails.
func (r *Runtime) RemoveNetwork(ctx context.Context, id string) error {
	cctx, cancel := call(ctx, callTimeout)
	in, err := r.eng.NetworkInspect(cctx, id, network.InspectOptions{})
	cancel()
	if cerrdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect network %s: %w", id, err)
	}
	if !r.ours(in.Labels) {
		return fmt.Errorf("remove network %s: %w", id, ErrForeign)
	}
	cctx, cancel = call(ctx, callTimeout)
	defer cancel()
	if err := r.eng.NetworkRemove(cctx, in.ID); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove network %s: %w", in.Name, err)
	}
	r.log.Info("network removed", "network", in.Name)
	return nil
}

// Connect attaches a running or created container to a network with DNS
// aliases, for a container that serves several networks (the shared
// PostgreSQL). Already connected is success. The extra network is not
// part of the container's spec: Ensure leaves it alone when it adopts.
func (r *Runtime) Connect(ctx context.Context, containerID, networkID string, aliases ...string) error {
	c, err := r.inspect(ctx, containerID)
	if err != nil {
		return err
	}
	for _, ep := range c.NetworkSettings.Networks {
		if ep.NetworkID == networkID {
			return nil
		}
	}
	cctx, cancel := call(ctx, callTimeout)
	defer cancel()
	err = r.eng.NetworkConnect(cctx, networkID, c.ID, &network.EndpointSettings{Aliases: aliases})
	if err != nil && !strings.Contains(err.Error(), "already exists") {
		return fmt.Errorf("connect %s to network %s: %w", c.Name, networkID, err)
	}
	return nil
}

// Disconnect detaches a container from a network; not connected, or
// either one missing, is success.
func (r *Runtime) Disconnect(ctx context.Context, containerID, networkID string) error {
	cctx, cancel := call(ctx, callTimeout)
	defer cancel()
	err := r.eng.NetworkDisconnect(cctx, networkID, containerID, true)
	if err != nil && !cerrdefs.IsNotFound(err) && !strings.Contains(err.Error(), "is not connected") {
		return fmt.Errorf("disconnect %s from network %s: %w", containerID, networkID, err)
	}
	return nil
}
