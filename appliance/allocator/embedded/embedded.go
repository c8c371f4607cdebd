// Package embedded is the allocator that needs no HIL: project membership
// lives in the appliance's database, power goes straight to each node's BMC
// over IPMI, one operation at a time per BMC address. It returns the
// sentinels of allocator/node, like the HIL client.
package embedded

import (
	"context"
	"errors"
	"fmt"

	"github.com/malleable-cloud/malleable/appliance/allocator/node"
)

// Membership keeps which project each node is in: the embedded
// allocator's state, in the appliance's database.
type Membership interface {
	AllocateNode(ctx context.Context, node, project string) error
	ReleaseNode(ctx context.Context, node, project string) error
	NodeProject(ctx context.Context, node string) (string, error)
	NodeProjects(ctx context.Context) (map[string]string, error)
}

// NodePower drives a node's BMC by node name, with the real credentials;
// it returns an error matching node.ErrNoPowerControl for a node without a
// BMC. New uses this package's IPMI backend (over the node records, the
// secret store and an IPMI client); tests may supply their own.
type NodePower interface {
	PowerStatus(ctx context.Context, node string) (bool, error)
	Power(ctx context.Context, node string, a node.PowerAction) error
	SetBootDevice(ctx context.Context, node string, d node.BootDevice, persistent bool) error
}

// Allocator is the allocator that needs no HIL: project membership lives in
// the appliance's database, power goes straight to each node's BMC. The
// caller-supplied IsOwned and IsNotFound map Membership errors to the
// sentinels of allocator/node (New sets them for the appliance's store).
type Allocator struct {
	Members Membership
	BMC     NodePower
	// IsOwned and IsNotFound classify Membership errors.
	IsOwned, IsNotFound func(error) bool
}

func (e *Allocator) classify(err error) error {
	switch {
	case err == nil:
		return nil
	case e.IsOwned != nil && e.IsOwned(err):
		return fmt.Errorf("%w: %w", node.ErrOwned, err)
	case e.IsNotFound != nil && e.IsNotFound(err):
		return fmt.Errorf("%w: %w", node.ErrNotFound, err)
	}
	return fmt.Errorf("%w: %w", node.ErrBackend, err)
}

// Connect puts node in project; already there is success.
func (e *Allocator) Connect(ctx context.Context, node, project string) error {
	return e.classify(e.Members.AllocateNode(ctx, node, project))
}

// Detach takes node out of project; already free is success.
func (e *Allocator) Detach(ctx context.Context, node, project string) error {
	return e.classify(e.Members.ReleaseNode(ctx, node, project))
}

// NodeProject returns node's project, or "" when it is free.
func (e *Allocator) NodeProject(ctx context.Context, node string) (string, error) {
	p, err := e.Members.NodeProject(ctx, node)
	return p, e.classify(err)
}

// NodeProjects returns every allocated node's project.
func (e *Allocator) NodeProjects(ctx context.Context) (map[string]string, error) {
	m, err := e.Members.NodeProjects(ctx)
	return m, e.classify(err)
}

// VerifyProject returns nil when node is in project, and otherwise an
// error wrapping node.ErrOwned.
func (e *Allocator) VerifyProject(ctx context.Context, name, project string) error {
	p, err := e.NodeProject(ctx, name)
	switch {
	case err != nil:
		return fmt.Errorf("verify project of node %s: %w", name, err)
	case p != project:
		return fmt.Errorf("node %s: %w: it is in project %q, not %s", name, node.ErrOwned, p, project)
	}
	return nil
}

// bmcErr classifies a power error: no power control stays itself, the rest
// are backend failures.
func bmcErr(err error) error {
	if err == nil || errors.Is(err, node.ErrNoPowerControl) || errors.Is(err, node.ErrBadArgument) {
		return err
	}
	return fmt.Errorf("%w: %w", node.ErrBackend, err)
}

// PowerStatus reads node's power from its BMC.
func (e *Allocator) PowerStatus(ctx context.Context, node string) (bool, error) {
	on, err := e.BMC.PowerStatus(ctx, node)
	return on, bmcErr(err)
}

// Power sends a chassis power command to node's BMC.
func (e *Allocator) Power(ctx context.Context, name string, a node.PowerAction) error {
	if _, err := node.ParsePowerAction(string(a)); err != nil {
		return err
	}
	return bmcErr(e.BMC.Power(ctx, name, a))
}

// SetBootDevice sets node's next boot device at its BMC.
func (e *Allocator) SetBootDevice(ctx context.Context, name string, d node.BootDevice, persistent bool) error {
	if _, err := node.ParseBootDevice(string(d)); err != nil {
		return err
	}
	return bmcErr(e.BMC.SetBootDevice(ctx, name, d, persistent))
}
