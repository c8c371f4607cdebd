package appliance

import (
	"context"
	"errors"
	"fmt"

	"github.com/malleable-cloud/malleable/appliance/bmc"
	"github.com/malleable-cloud/malleable/appliance/hil"
	"github.com/malleable-cloud/malleable/appliance/store"
)

// secretStore is what the appliance needs from a secret store:
// secrets.FileStore now, Vault later.
type secretStore interface {
	Get(ctx context.Context, path string) ([]byte, error)
	Put(ctx context.Context, path string, value []byte) error
	Delete(ctx context.Context, path string) error
}

// bmcSecretPath is where a node's BMC password is kept.
func bmcSecretPath(node string) string { return "bmc/" + node }

// ipmiPower is what nodePower needs from the IPMI client.
type ipmiPower interface {
	PowerStatus(ctx context.Context, t bmc.Target) (bool, error)
	Power(ctx context.Context, t bmc.Target, action string) error
	SetBootDevice(ctx context.Context, t bmc.Target, device string, persistent bool) error
}

// nodePower drives a node's BMC by node name: it joins the node's record
// (address, user) with its password from the secret store. It is the
// embedded allocator's power backend.
type nodePower struct {
	store   *store.Store
	secrets secretStore
	ipmi    ipmiPower
}

var _ hil.NodePower = nodePower{}

func (p nodePower) target(ctx context.Context, node string) (bmc.Target, error) {
	n, err := p.store.GetNode(ctx, node)
	if err != nil {
		return bmc.Target{}, err
	}
	if n.BMC.Host == "" {
		return bmc.Target{}, fmt.Errorf("node %s: %w", node, hil.ErrNoPowerControl)
	}
	pw, err := p.secrets.Get(ctx, bmcSecretPath(node))
	if err != nil {
		return bmc.Target{}, fmt.Errorf("node %s: BMC password: %w", node, err)
	}
	return bmc.Target{Host: n.BMC.Host, Port: n.BMC.Port, User: n.BMC.User, Password: string(pw)}, nil
}

func (p nodePower) PowerStatus(ctx context.Context, node string) (bool, error) {
	t, err := p.target(ctx, node)
	if err != nil {
		return false, err
	}
	return p.ipmi.PowerStatus(ctx, t)
}

func (p nodePower) Power(ctx context.Context, node, action string) error {
	t, err := p.target(ctx, node)
	if err != nil {
		return err
	}
	return p.ipmi.Power(ctx, t, action)
}

func (p nodePower) SetBootDevice(ctx context.Context, node, device string, persistent bool) error {
	t, err := p.target(ctx, node)
	if err != nil {
		return err
	}
	return p.ipmi.SetBootDevice(ctx, t, device, persistent)
}

// newEmbeddedAllocator returns the allocator that keeps membership in st
// and drives BMCs over IPMI.
func newEmbeddedAllocator(st *store.Store, sec secretStore, ipmi ipmiPower) *hil.Embedded {
	return &hil.Embedded{
		Members:    st,
		BMC:        nodePower{store: st, secrets: sec, ipmi: ipmi},
		IsOwned:    func(err error) bool { return errors.Is(err, store.ErrAllocated) },
		IsNotFound: func(err error) bool { return errors.Is(err, store.ErrNotFound) },
	}
}
