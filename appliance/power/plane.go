package power

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/malleable-cloud/malleable/appliance/allocator/node"
	"github.com/malleable-cloud/malleable/appliance/lease"
)

// Plane is the appliance's one path to node power, shared by the
// broker, the admin API and the reconciler. It keeps two promises:
//
//   - a per-node gate: a tenant's command holds its node's gate (shared)
//     from the holder check to the end of the BMC call, and a fence takes it
//     exclusively, so a fence waits out commands already checked and no
//     command checked before a fence lands after it;
//   - a power cache that every power change the appliance makes drops, so
//     nobody reads a state older than the last change.
type Plane struct {
	alloc Allocator
	gates nodeGates
	cache *powerCache
}

// Allocator is what the plane drives: node power and boot devices, and
// the project moves a handover makes.
type Allocator interface {
	Connect(ctx context.Context, node, project string) error
	Detach(ctx context.Context, node, project string) error
	PowerStatus(ctx context.Context, node string) (bool, error)
	Power(ctx context.Context, node string, a node.PowerAction) error
	SetBootDevice(ctx context.Context, node string, d node.BootDevice, persistent bool) error
}

// New returns the power plane over alloc. Power states are
// answered from cache for ttl; now is the clock.
func New(alloc Allocator, ttl time.Duration, now func() time.Time) *Plane {
	return &Plane{alloc: alloc, cache: newPowerCache(alloc, ttl, now)}
}

// CommandTimeout bounds a power or boot-device command run under a node's
// gate. It outlasts every allocator's own deadline (HIL's OBM calls: 60 s
// by default; IPMI: seconds), so the allocator gives up on its own terms
// before the gate is let go and a fence can pass.
const CommandTimeout = 90 * time.Second

// Shared holds node's gate in shared mode (tenant and admin commands) until
// the returned release is called.
func (p *Plane) Shared(node string) (release func()) { return p.gates.acquire(node, false) }

// Exclusive holds node's gate alone (a fence) until release is called:
// it waits for every shared holder to finish.
func (p *Plane) Exclusive(node string) (release func()) { return p.gates.acquire(node, true) }

// Command runs do with node's gate held shared, in a context that outlives
// ctx: a caller that hangs up must not let the gate go while the allocator
// still carries the command out. CommandTimeout bounds it.
func (p *Plane) Command(ctx context.Context, node string, do func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), CommandTimeout)
	defer cancel()
	release := p.Shared(node)
	defer release()
	return do(ctx)
}

// Power sends a chassis power command and drops the cached state.
func (p *Plane) Power(ctx context.Context, node string, a node.PowerAction) error {
	defer p.cache.forget(node)
	return p.alloc.Power(ctx, node, a)
}

// ReadPower reads node's power from its BMC, bypassing the cache, and
// remembers the answer.
func (p *Plane) ReadPower(ctx context.Context, node string) (bool, error) {
	gen := p.cache.generation(node)
	on, err := p.alloc.PowerStatus(ctx, node)
	if err == nil {
		p.cache.store(node, on, gen)
	}
	return on, err
}

// Status answers node's power from the plane's cache or a fresh read
// (see powerCache.status).
func (p *Plane) Status(ctx context.Context, node string) (Reading, error) {
	return p.cache.status(ctx, node)
}

// Forget drops node's cached power: it changed behind the plane's back.
func (p *Plane) Forget(node string) { p.cache.forget(node) }

// SetBootDevice sets the device node boots from next.
func (p *Plane) SetBootDevice(ctx context.Context, node string, d node.BootDevice, persistent bool) error {
	return p.alloc.SetBootDevice(ctx, node, d, persistent)
}

// projectVerifier is implemented by allocators that can confirm, just
// before a command, that a node is in its holder's project (HIL: another
// party may have moved it).
type projectVerifier interface {
	VerifyProject(ctx context.Context, node, project string) error
}

// VerifyProject confirms node is in project where the allocator can tell
// (HIL); it is a no-op for allocators that cannot.
func (p *Plane) VerifyProject(ctx context.Context, node, project string) error {
	if v, ok := p.alloc.(projectVerifier); ok {
		return v.VerifyProject(ctx, node, project)
	}
	return nil
}

// Fence runs clear (which takes the node from its holder) with the node's
// gate held exclusively, and drops its cached power.
func (p *Plane) Fence(node string, clear func() error) error {
	release := p.Exclusive(node)
	defer release()
	defer p.cache.forget(node)
	return clear()
}

// nodeGates is a read-write lock per node, made on first use and dropped
// when nobody holds or waits for it.
type nodeGates struct {
	mu sync.Mutex
	m  map[string]*nodeGate
}

type nodeGate struct {
	sync.RWMutex
	users int // holders and waiters; guarded by nodeGates.mu
}

func (g *nodeGates) acquire(node string, exclusive bool) (release func()) {
	g.mu.Lock()
	if g.m == nil {
		g.m = map[string]*nodeGate{}
	}
	e := g.m[node]
	if e == nil {
		e = &nodeGate{}
		g.m[node] = e
	}
	e.users++
	g.mu.Unlock()
	unlock := e.RUnlock
	if exclusive {
		e.Lock()
		unlock = e.Unlock
	} else {
		e.RLock()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			unlock()
			g.mu.Lock()
			if e.users--; e.users == 0 {
				delete(g.m, node)
			}
			g.mu.Unlock()
		})
	}
}

// hardware adapts the power plane to what a handover needs.
type hardware struct{ p *Plane }

// Hardware is the plane as a handover drives it: power off and read
// through the plane (dropping its cache), connect and detach through the
// allocator, and the allocator's "not now" answers as lease.ErrWait.
func (p *Plane) Hardware() lease.Hardware { return hardware{p} }

// waitOrErr marks the allocator's "not now" answers (HIL has an action
// pending, HIL or OBMd did not answer) as lease.ErrWait: the handover
// retries them without counting an attempt.
func waitOrErr(err error) error {
	if errors.Is(err, node.ErrPending) || errors.Is(err, node.ErrUnavailable) {
		return fmt.Errorf("%w: %w", lease.ErrWait, err)
	}
	return err
}

func (h hardware) PowerOff(ctx context.Context, name string) error {
	return waitOrErr(h.p.Power(ctx, name, node.PowerOff))
}

func (h hardware) PowerIsOn(ctx context.Context, name string) (bool, error) {
	on, err := h.p.ReadPower(ctx, name)
	// A free node under HIL has its OBM disabled, so its power cannot be
	// read or driven ("OBM is not enabled") until the handover connects it.
	if errors.Is(err, node.ErrNoPowerControl) || errors.Is(err, node.ErrBlocked) {
		return false, fmt.Errorf("%w: %w", node.ErrNoPowerControl, err)
	}
	return on, waitOrErr(err)
}

func (h hardware) Detach(ctx context.Context, node, project string) error {
	return waitOrErr(h.p.alloc.Detach(ctx, node, project))
}

func (h hardware) Connect(ctx context.Context, node, project string) error {
	return waitOrErr(h.p.alloc.Connect(ctx, node, project))
}

// gatedJournal takes the node's gate exclusively while the fence and
// activate steps change the node's holder: a fence waits out the commands
// the old holder already had checked, and activation waits out an admin's
// command checked while nobody held the node.
type gatedJournal struct {
	lease.Journal
	p *Plane
}

// Journal returns j with the fence and activate steps' completion run
// under the node's gate, held exclusively.
func (p *Plane) Journal(j lease.Journal) lease.Journal { return gatedJournal{j, p} }

func (j gatedJournal) Complete(ctx context.Context, h lease.Handover, step lease.Step, skipped string) error {
	if step != lease.StepFence && step != lease.StepActivate {
		return j.Journal.Complete(ctx, h, step, skipped)
	}
	return j.p.Fence(h.Node, func() error { return j.Journal.Complete(ctx, h, step, skipped) })
}

// Status-read budgets. Foreman shows N/A past 3 s, and a smart-proxy gives
// the broker 2 s by default (its broker.status_timeout): the answer must
// come before either.
const (
	// statusBudget is how long a status answer waits for a fresh read
	// before it answers the last known state.
	statusBudget = 1500 * time.Millisecond
	// statusLimit is how long it waits when no state was ever known.
	statusLimit = 1800 * time.Millisecond
	// statusReadTimeout bounds a BMC read that goes on in the background
	// after its callers were answered.
	statusReadTimeout = 15 * time.Second
)

// powerCache remembers each node's power state for ttl, so status queries
// are answered without a BMC round trip, and concurrent misses for one node
// share one BMC call. Every change bumps the node's generation: a read that
// started before a change neither lands in the cache nor serves callers that
// came after it.
type powerCache struct {
	alloc         Allocator
	ttl           time.Duration
	now           func() time.Time
	budget, limit time.Duration
	readTimeout   time.Duration
	mu            sync.Mutex
	entries       map[string]powerEntry
	group         singleflight.Group
}

type powerEntry struct {
	known bool // on and at hold a reading of this generation or before
	on    bool
	at    time.Time
	gen   uint64
}

// Reading is a node's power as last read, and whether it is stale: the
// fresh read did not answer in time.
type Reading struct {
	On    bool
	At    time.Time
	Stale bool
}

func newPowerCache(alloc Allocator, ttl time.Duration, now func() time.Time) *powerCache {
	return &powerCache{alloc: alloc, ttl: ttl, now: now, budget: statusBudget, limit: statusLimit,
		readTimeout: statusReadTimeout, entries: map[string]powerEntry{}}
}

func (c *powerCache) entry(node string) powerEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entries[node]
}

func (c *powerCache) generation(node string) uint64 { return c.entry(node).gen }

// store records a reading taken at generation gen, unless the state changed
// since.
func (c *powerCache) store(node string, on bool, gen uint64) time.Time {
	at := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries[node].gen == gen {
		c.entries[node] = powerEntry{known: true, on: on, at: at, gen: gen + 1}
	}
	return at
}

// forget drops node's state: its power changed.
func (c *powerCache) forget(node string) {
	c.mu.Lock()
	c.entries[node] = powerEntry{gen: c.entries[node].gen + 1}
	c.mu.Unlock()
}

// status answers node's power: from cache within ttl, else from a fresh
// read; if that read is slower than the budget, from the last known state
// marked stale, and only with nothing known does it wait up to the limit
// and fail.
func (c *powerCache) status(ctx context.Context, node string) (Reading, error) {
	e := c.entry(node)
	if e.known && c.now().Sub(e.at) < c.ttl {
		return Reading{On: e.on, At: e.at}, nil
	}
	gen := e.gen
	ch := c.group.DoChan(node+"#"+strconv.FormatUint(gen, 10), func() (any, error) {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.readTimeout)
		defer cancel()
		on, err := c.alloc.PowerStatus(rctx, node)
		if err != nil {
			return Reading{}, err
		}
		return Reading{On: on, At: c.store(node, on, gen)}, nil
	})
	wait := c.limit
	if e.known {
		wait = c.budget
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case res := <-ch:
		return res.Val.(Reading), res.Err
	case <-ctx.Done():
		return Reading{}, ctx.Err()
	case <-timer.C:
	}
	if e.known {
		return Reading{On: e.on, At: e.at, Stale: true}, nil
	}
	return Reading{}, fmt.Errorf("no answer from the BMC within %s: %w", wait, context.DeadlineExceeded)
}
