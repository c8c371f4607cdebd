package embedded

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/malleable-cloud/malleable/appliance/allocator/node"
	"github.com/malleable-cloud/malleable/appliance/bmc"
	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/secrets"
	"github.com/malleable-cloud/malleable/appliance/store"
)

// Store is what the embedded allocator needs from the appliance's
// database: project membership, and each node's record for its BMC's
// address and user. *store.Store implements it.
type Store interface {
	Membership
	GetNode(ctx context.Context, name string) (inventory.Node, error)
}

// Secrets is what the embedded allocator needs from the secret store: each
// node's BMC password, kept at secrets.BMCPasswordPath.
type Secrets interface {
	Get(ctx context.Context, path string) ([]byte, error)
}

// IPMI is what the embedded allocator needs from an IPMI client
// (*bmc.Client). It takes actions and devices as bmc's strings.
type IPMI interface {
	PowerStatus(ctx context.Context, t bmc.Target) (bool, error)
	Power(ctx context.Context, t bmc.Target, action string) error
	SetBootDevice(ctx context.Context, t bmc.Target, device string, persistent bool) error
}

var (
	_ Store = (*store.Store)(nil)
	_ IPMI  = (*bmc.IPMI)(nil)
)

// New returns the allocator that keeps membership in st and drives BMCs
// over ipmi, with each node's password from sec.
func New(st Store, sec Secrets, ipmi IPMI) *Allocator {
	return &Allocator{
		Members:    st,
		BMC:        nodePower{store: st, secrets: sec, ipmi: ipmi, serial: &bmcSerial{}},
		IsOwned:    func(err error) bool { return errors.Is(err, store.ErrAllocated) },
		IsNotFound: func(err error) bool { return errors.Is(err, store.ErrNotFound) },
	}
}

// nodePower drives a node's BMC by node name: it joins the node's record
// (address, user) with its password from the secret store. IPMI to one BMC
// address runs one operation at a time: a BMC serves few sessions, and
// ipmi_sim runs each chassis command synchronously, so concurrent sessions
// only time out.
type nodePower struct {
	store   Store
	secrets Secrets
	ipmi    IPMI
	serial  *bmcSerial
}

var _ NodePower = nodePower{}

func (p nodePower) target(ctx context.Context, name string) (bmc.Target, error) {
	n, err := p.store.GetNode(ctx, name)
	if err != nil {
		return bmc.Target{}, err
	}
	if n.BMC.Host == "" {
		return bmc.Target{}, fmt.Errorf("node %s: %w", name, node.ErrNoPowerControl)
	}
	pw, err := p.secrets.Get(ctx, secrets.BMCPasswordPath(name))
	if err != nil {
		return bmc.Target{}, fmt.Errorf("node %s: BMC password: %w", name, err)
	}
	return bmc.Target{Host: n.BMC.Host, Port: n.BMC.Port, User: n.BMC.User, Password: string(pw)}, nil
}

// with runs do on node's BMC target, alone on its address.
func (p nodePower) with(ctx context.Context, node string, do func(bmc.Target) error) error {
	t, err := p.target(ctx, node)
	if err != nil {
		return err
	}
	release, err := p.serial.acquire(ctx, t.Addr())
	if err != nil {
		return fmt.Errorf("node %s: wait for its BMC: %w", node, err)
	}
	defer release()
	return do(t)
}

// PowerStatus reads node's chassis power.
func (p nodePower) PowerStatus(ctx context.Context, node string) (on bool, err error) {
	err = p.with(ctx, node, func(t bmc.Target) (err error) {
		on, err = p.ipmi.PowerStatus(ctx, t)
		return err
	})
	return on, err
}

// Power sends a chassis command. node's action names are bmc's, so the
// typed action becomes bmc's string here, at the edge.
func (p nodePower) Power(ctx context.Context, node string, a node.PowerAction) error {
	return p.with(ctx, node, func(t bmc.Target) error { return p.ipmi.Power(ctx, t, string(a)) })
}

// SetBootDevice sets the next boot device; like Power, typed down to here.
func (p nodePower) SetBootDevice(ctx context.Context, node string, d node.BootDevice, persistent bool) error {
	return p.with(ctx, node, func(t bmc.Target) error { return p.ipmi.SetBootDevice(ctx, t, string(d), persistent) })
}

// bmcSerial is a lock per BMC address (host:port) that a waiter can give
// up on when its context ends; an address's lock is dropped when unused.
type bmcSerial struct {
	mu sync.Mutex
	m  map[string]*bmcSlot
}

type bmcSlot struct {
	held  chan struct{} // a token in it means the address is busy
	users int           // guarded by bmcSerial.mu
}

func (s *bmcSerial) acquire(ctx context.Context, addr string) (release func(), err error) {
	s.mu.Lock()
	if s.m == nil {
		s.m = map[string]*bmcSlot{}
	}
	e := s.m[addr]
	if e == nil {
		e = &bmcSlot{held: make(chan struct{}, 1)}
		s.m[addr] = e
	}
	e.users++
	s.mu.Unlock()
	done := func() {
		s.mu.Lock()
		if e.users--; e.users == 0 {
			delete(s.m, addr)
		}
		s.mu.Unlock()
	}
	select {
	case e.held <- struct{}{}:
		return func() { <-e.held; done() }, nil
	case <-ctx.Done():
		done()
		return nil, ctx.Err()
	}
}
