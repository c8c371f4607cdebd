package lease

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/malleable-cloud/malleable/appliance/allocator/node"
)

// Step is one step of a handover. Steps run in the order of Steps; each is
// idempotent, so a handover resumed after a crash simply repeats the step
// whose intent was journaled but whose outcome was not.
type Step string

// Handover steps.
const (
	// StepFence: the old tenant stops seeing real power; from now on it
	// reads "off" and its power commands are refused.
	StepFence Step = "fence"
	// StepPowerOff: power the node off and verify it is off.
	StepPowerOff Step = "power_off"
	// StepUnbindDisk: detach the old tenant's disk target from the node
	// (the disk is kept).
	StepUnbindDisk Step = "unbind_disk"
	// StepDetach: detach the node from the old tenant's project.
	StepDetach Step = "detach"
	// StepConnect: connect the node to the new tenant's project.
	StepConnect Step = "connect"
	// StepActivate: the new tenant now sees real power and may drive it.
	StepActivate Step = "activate"
	// StepDone: nothing left to do.
	StepDone Step = "done"
)

// Steps lists the handover steps in order.
var Steps = []Step{StepFence, StepPowerOff, StepUnbindDisk, StepDetach, StepConnect, StepActivate, StepDone}

// Next returns the step after s.
func (s Step) Next() Step {
	for i, x := range Steps {
		if x == s && i+1 < len(Steps) {
			return Steps[i+1]
		}
	}
	return StepDone
}

// HandoverStatus is where a handover stands.
type HandoverStatus string

// Handover statuses.
const (
	HandoverRunning HandoverStatus = "running"
	HandoverStuck   HandoverStatus = "stuck" // a step failed too often; an admin retries it
	HandoverDone    HandoverStatus = "done"
)

// Handover moves one node from one tenant to another at a lease boundary.
// From or To is empty when the node was or becomes free.
type Handover struct {
	ID        int64          `json:"id"`
	Node      string         `json:"node"`
	From      string         `json:"from,omitempty"`
	To        string         `json:"to,omitempty"`
	Step      Step           `json:"step"`
	Status    HandoverStatus `json:"status"`
	Attempts  int            `json:"attempts"`
	LastError string         `json:"last_error,omitempty"`
	CreatedAt time.Time      `json:"created_at"`
	UpdatedAt time.Time      `json:"updated_at"`
}

// Hardware is what a handover needs from the allocator and the BMCs. For a
// node whose power the appliance does not manage (no BMC), PowerIsOn
// returns an error matching node.ErrNoPowerControl: the power steps are
// skipped.
type Hardware interface {
	PowerOff(ctx context.Context, node string) error
	PowerIsOn(ctx context.Context, node string) (bool, error)
	Detach(ctx context.Context, node, project string) error
	Connect(ctx context.Context, node, project string) error
}

// Disks unbinds a tenant's disk from a node at a handover.
type Disks interface {
	UnbindNode(ctx context.Context, node, tenant string) error
}

// Journal persists a handover's progress. Intent is written before a step
// acts; Complete after it acted, atomically with the step's own state
// change (the holder, for fence and activate); Failed when it did not.
type Journal interface {
	Intent(ctx context.Context, h Handover, step Step) error
	// Complete records that step is done and h moves to the next step. For
	// StepFence it also clears the node's holder; for StepActivate it sets
	// the holder to h.To; both in the same transaction.
	Complete(ctx context.Context, h Handover, step Step, skipped string) error
	// Failed records a failed attempt; stuck marks the handover stuck.
	Failed(ctx context.Context, h Handover, step Step, err error, stuck bool) error
}

// ErrWait marks a step error that is not the step's failure: the
// allocator is busy or unreachable (HIL has a network action pending, HIL
// or OBMd did not answer in time). The step is retried at the next pass
// with the reason in LastError, and it does not count toward MaxAttempts.
var ErrWait = errors.New("waiting")

// Hosts keeps tenants' Foremans' hosts (tenants.Plan).
type Hosts interface {
	HostFor(ctx context.Context, tenant, node string) error
}

// Machine runs handovers.
type Machine struct {
	Hardware Hardware
	Disks    Disks
	Journal  Journal
	// Project names the allocator project of a tenant.
	Project func(tenant string) string
	// Hosts, if set, makes the node's host in its new tenant's Foreman at
	// the activate step. A failure there does not hold the node back from
	// its tenant: the step records it, and the tenants' drift pass makes
	// the host later.
	Hosts Hosts
	// MaxAttempts failures of one step mark the handover stuck.
	MaxAttempts int
	// PowerOffTimeout bounds waiting for a node to read off (default 1m).
	PowerOffTimeout time.Duration
	// PollInterval is how often power is re-read while waiting (default
	// 250ms).
	PollInterval time.Duration
	// Hook, if set, is called at every step boundary with names such as
	// "power_off:intent", "power_off:acted" and "power_off:done". Tests
	// use it for fault injection; it must not fail.
	Hook func(point string)
}

func (m *Machine) hook(step Step, phase string) {
	if m.Hook != nil {
		m.Hook(string(step) + ":" + phase)
	}
}

// Run advances h from its current step to done, journaling each step. It
// returns the first step error; the handover stays running (and is resumed
// by the next pass) or becomes stuck after MaxAttempts failures.
func (m *Machine) Run(ctx context.Context, h Handover) (Handover, error) {
	for h.Status == HandoverRunning && h.Step != StepDone {
		step := h.Step
		if err := m.Journal.Intent(ctx, h, step); err != nil {
			return h, fmt.Errorf("handover %d: journal %s intent: %w", h.ID, step, err)
		}
		m.hook(step, "intent")
		skipped, err := m.act(ctx, h, step)
		if err != nil && ctx.Err() != nil {
			// Interrupted (shutdown), not failed: the step's intent is
			// journaled and the next run repeats it.
			return h, fmt.Errorf("handover %d of %s: step %s interrupted: %w", h.ID, h.Node, step, ctx.Err())
		}
		if err != nil {
			failed := h
			failed.LastError = err.Error()
			if !errors.Is(err, ErrWait) {
				failed.Attempts++
			}
			stuck := m.MaxAttempts > 0 && failed.Attempts >= m.MaxAttempts
			if stuck {
				failed.Status = HandoverStuck
			}
			if jerr := m.Journal.Failed(ctx, failed, step, err, stuck); jerr != nil {
				return h, fmt.Errorf("handover %d: journal %s failure: %w", h.ID, step, errors.Join(err, jerr))
			}
			return failed, fmt.Errorf("handover %d of %s: step %s: %w", h.ID, h.Node, step, err)
		}
		m.hook(step, "acted")
		if err := m.Journal.Complete(ctx, h, step, skipped); err != nil {
			return h, fmt.Errorf("handover %d: journal %s done: %w", h.ID, step, err)
		}
		m.hook(step, "done")
		h.Step, h.Attempts, h.LastError = step.Next(), 0, ""
	}
	if h.Step == StepDone {
		h.Status = HandoverDone
	}
	return h, nil
}

// act performs one step. A step that has nothing to do returns why in
// skipped.
func (m *Machine) act(ctx context.Context, h Handover, step Step) (skipped string, err error) {
	switch step {
	case StepFence:
		return "", nil // the journal changes the holder atomically with Complete
	case StepActivate:
		// The journal sets the holder atomically with Complete.
		if m.Hosts == nil || h.To == "" {
			return "", nil
		}
		if err := m.Hosts.HostFor(ctx, h.To, h.Node); err != nil {
			return "host not made in " + h.To + "'s Foreman yet (" + err.Error() + "); the tenants' drift pass makes it", nil
		}
		return "", nil
	case StepPowerOff:
		return m.powerOff(ctx, h.Node)
	case StepUnbindDisk:
		if h.From == "" {
			return "node was free", nil
		}
		if m.Disks == nil {
			return "no storage configured", nil
		}
		return "", m.Disks.UnbindNode(ctx, h.Node, h.From)
	case StepDetach:
		if h.From == "" {
			return "node was free", nil
		}
		return "", m.Hardware.Detach(ctx, h.Node, m.Project(h.From))
	case StepConnect:
		if h.To == "" {
			return "node becomes free", nil
		}
		if err := m.Hardware.Connect(ctx, h.Node, m.Project(h.To)); err != nil {
			return "", err
		}
		if h.From != "" {
			return "", nil
		}
		// A free node's power may be out of reach until it is connected
		// (HIL disables a free node's OBM), so the power-off step could not
		// turn it off: do it now, so that every node reaches its new tenant
		// powered off.
		if _, err := m.powerOff(ctx, h.Node); err != nil {
			return "", fmt.Errorf("connected; %w", err)
		}
		return "", nil
	}
	return "", fmt.Errorf("unknown step %q", step)
}

// powerOff turns the node off and waits until it reads off.
func (m *Machine) powerOff(ctx context.Context, name string) (string, error) {
	on, err := m.Hardware.PowerIsOn(ctx, name)
	if errors.Is(err, node.ErrNoPowerControl) {
		return "node has no power control", nil
	}
	if err != nil {
		return "", fmt.Errorf("read power: %w", err)
	}
	if !on {
		return "already off", nil
	}
	if err := m.Hardware.PowerOff(ctx, name); err != nil {
		return "", fmt.Errorf("power off: %w", err)
	}
	timeout, interval := m.PowerOffTimeout, m.PollInterval
	if timeout <= 0 {
		timeout = time.Minute
	}
	if interval <= 0 {
		interval = 250 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		on, err := m.Hardware.PowerIsOn(ctx, name)
		if err == nil && !on {
			return "", nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = errors.New("still on")
			}
			return "", fmt.Errorf("node did not power off within %s: %w", timeout, err)
		case <-tick.C:
		}
	}
}

// JournalEntry is one line of a handover's journal.
type JournalEntry struct {
	Step   Step      `json:"step"`
	Phase  string    `json:"phase"`
	At     time.Time `json:"at"`
	Detail string    `json:"detail,omitempty"`
}
