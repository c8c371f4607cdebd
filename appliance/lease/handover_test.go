package lease_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/malleable-cloud/malleable/appliance/allocator/node"
	"github.com/malleable-cloud/malleable/appliance/lease"
)

// The fakes below share one event log, so a test can check the order of
// journal writes, hardware calls and hooks against each other. They are
// fakes on purpose: Machine is pure domain logic, and the real journal,
// allocator and BMCs are exercised end to end in the appliance package.

// events is the shared log: "intent fence", "off n1", "hook fence:done", ...
type events struct{ all []string }

func (e *events) add(format string, args ...any) { e.all = append(e.all, fmt.Sprintf(format, args...)) }

// only returns the events whose first word is one of kinds.
func (e *events) only(kinds ...string) []string {
	var out []string
	for _, s := range e.all {
		kind, _, _ := strings.Cut(s, " ")
		if slices.Contains(kinds, kind) {
			out = append(out, s)
		}
	}
	return out
}

var (
	journalEvents  = []string{"intent", "done", "skipped", "failed"}
	hardwareEvents = []string{"is_on", "off", "detach", "connect", "unbind"}
)

// fakeHardware is one node's BMC and allocator membership, and its disks.
type fakeHardware struct {
	ev      *events
	on      bool
	noPower bool // PowerIsOn answers ErrNoPowerControl
	// noPowerUntilConnect: PowerIsOn answers ErrNoPowerControl until
	// Connect, as HIL does for a free node (its OBM is disabled).
	noPowerUntilConnect bool
	// lag is how many reads after PowerOff still see the node on (-1:
	// forever); lagErr, if set, is what those reads return instead.
	lag, pending int
	lagErr       error
	// fail makes an operation ("is_on", "off", "detach", "connect",
	// "unbind") fail with the error, every time.
	fail map[string]error
}

func (f *fakeHardware) PowerIsOn(_ context.Context, name string) (bool, error) {
	f.ev.add("is_on %s", name)
	if err := f.fail["is_on"]; err != nil {
		return false, err
	}
	if f.noPower || f.noPowerUntilConnect {
		return false, fmt.Errorf("node %s: %w", name, node.ErrNoPowerControl)
	}
	if f.pending != 0 {
		if f.pending > 0 {
			f.pending--
		}
		return true, f.lagErr
	}
	return f.on, nil
}

func (f *fakeHardware) PowerOff(_ context.Context, node string) error {
	f.ev.add("off %s", node)
	if err := f.fail["off"]; err != nil {
		return err
	}
	f.on, f.pending = false, f.lag
	return nil
}

func (f *fakeHardware) Detach(_ context.Context, node, project string) error {
	f.ev.add("detach %s %s", node, project)
	return f.fail["detach"]
}

func (f *fakeHardware) Connect(_ context.Context, node, project string) error {
	f.ev.add("connect %s %s", node, project)
	if err := f.fail["connect"]; err != nil {
		return err
	}
	f.noPowerUntilConnect = false
	return nil
}

func (f *fakeHardware) UnbindNode(_ context.Context, node, tenant string) error {
	f.ev.add("unbind %s %s", node, tenant)
	return f.fail["unbind"]
}

// fakeJournal keeps the handover as a store would and logs every write.
// Like the store, it refuses to complete a step the handover is not at.
type fakeJournal struct {
	ev    *events
	saved lease.Handover
	// fail makes a write ("intent", "complete", "failed") at a step fail.
	fail map[string]error
}

func (j *fakeJournal) err(op string, step lease.Step) error { return j.fail[op+" "+string(step)] }

func (j *fakeJournal) Intent(_ context.Context, h lease.Handover, step lease.Step) error {
	if err := j.err("intent", step); err != nil {
		return err
	}
	j.ev.add("intent %s", step)
	return nil
}

func (j *fakeJournal) Complete(_ context.Context, h lease.Handover, step lease.Step, skipped string) error {
	if err := j.err("complete", step); err != nil {
		return err
	}
	if j.saved.Step != step {
		return fmt.Errorf("handover is at step %s, not %s", j.saved.Step, step)
	}
	if skipped != "" {
		j.ev.add("skipped %s (%s)", step, skipped)
	} else {
		j.ev.add("done %s", step)
	}
	j.saved.Step, j.saved.Attempts, j.saved.LastError = step.Next(), 0, ""
	if j.saved.Step == lease.StepDone {
		j.saved.Status = lease.HandoverDone
	}
	return nil
}

func (j *fakeJournal) Failed(_ context.Context, h lease.Handover, step lease.Step, stepErr error, stuck bool) error {
	if err := j.err("failed", step); err != nil {
		return err
	}
	j.ev.add("failed %s (stuck=%t)", step, stuck)
	j.saved.Attempts, j.saved.LastError = h.Attempts, stepErr.Error()
	if stuck {
		j.saved.Status = lease.HandoverStuck
	}
	return nil
}

// fixture is a Machine wired to the fakes, and a handover of node n1.
type fixture struct {
	ev *events
	hw *fakeHardware
	j  *fakeJournal
	m  *lease.Machine
}

func newFixture(from, to string) *fixture {
	ev := &events{}
	hw := &fakeHardware{ev: ev, on: true}
	h := lease.Handover{ID: 7, Node: "n1", From: from, To: to, Step: lease.StepFence, Status: lease.HandoverRunning}
	j := &fakeJournal{ev: ev, saved: h}
	m := &lease.Machine{
		Hardware: hw, Disks: hw, Journal: j,
		Project:         func(tenant string) string { return "p-" + tenant },
		MaxAttempts:     3,
		PowerOffTimeout: 10 * time.Second,
		PollInterval:    time.Second,
		Hook:            func(point string) { ev.add("hook %s", point) },
	}
	return &fixture{ev: ev, hw: hw, j: j, m: m}
}

// run runs the handover as the journal last saved it, as a reconcile
// pass does after reading it back.
func (f *fixture) run(t *testing.T) (lease.Handover, error) {
	t.Helper()
	return f.m.Run(context.Background(), f.j.saved)
}

func wantErrContaining(t *testing.T, err error, substr string) {
	t.Helper()
	switch {
	case substr == "" && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case substr != "" && err == nil:
		t.Fatalf("got no error, want one containing %q", substr)
	case substr != "" && !strings.Contains(err.Error(), substr):
		t.Fatalf("error %q does not contain %q", err, substr)
	}
}

func wantEvents(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got  %q\n want %q", what, got, want)
	}
}

func TestMachineRun(t *testing.T) {
	tests := map[string]struct {
		from, to string
		off      bool // the node is already off
		noPower  bool
		noDisks  bool
		journal  []string
		hardware []string
	}{
		"A to B": {
			from: "acme", to: "globex",
			journal: []string{"intent fence", "done fence", "intent power_off", "done power_off",
				"intent unbind_disk", "done unbind_disk", "intent detach", "done detach",
				"intent connect", "done connect", "intent activate", "done activate"},
			hardware: []string{"is_on n1", "off n1", "is_on n1", "unbind n1 acme", "detach n1 p-acme", "connect n1 p-globex"},
		},
		"free to B skips unbind and detach": {
			to: "globex",
			journal: []string{"intent fence", "done fence", "intent power_off", "done power_off",
				"intent unbind_disk", "skipped unbind_disk (node was free)", "intent detach", "skipped detach (node was free)",
				"intent connect", "done connect", "intent activate", "done activate"},
			hardware: []string{"is_on n1", "off n1", "is_on n1", "connect n1 p-globex", "is_on n1"}, // still off after connect,
		},
		"A to free skips connect": {
			from: "acme",
			journal: []string{"intent fence", "done fence", "intent power_off", "done power_off",
				"intent unbind_disk", "done unbind_disk", "intent detach", "done detach",
				"intent connect", "skipped connect (node becomes free)", "intent activate", "done activate"},
			hardware: []string{"is_on n1", "off n1", "is_on n1", "unbind n1 acme", "detach n1 p-acme"},
		},
		"power already off: no power command": {
			from: "acme", to: "globex", off: true,
			journal: []string{"intent fence", "done fence", "intent power_off", "skipped power_off (already off)",
				"intent unbind_disk", "done unbind_disk", "intent detach", "done detach",
				"intent connect", "done connect", "intent activate", "done activate"},
			hardware: []string{"is_on n1", "unbind n1 acme", "detach n1 p-acme", "connect n1 p-globex"},
		},
		"no power control: power step skipped": {
			from: "acme", to: "globex", noPower: true,
			journal: []string{"intent fence", "done fence", "intent power_off", "skipped power_off (node has no power control)",
				"intent unbind_disk", "done unbind_disk", "intent detach", "done detach",
				"intent connect", "done connect", "intent activate", "done activate"},
			hardware: []string{"is_on n1", "unbind n1 acme", "detach n1 p-acme", "connect n1 p-globex"},
		},
		"no storage: unbind skipped": {
			from: "acme", to: "globex", noDisks: true,
			journal: []string{"intent fence", "done fence", "intent power_off", "done power_off",
				"intent unbind_disk", "skipped unbind_disk (no storage configured)", "intent detach", "done detach",
				"intent connect", "done connect", "intent activate", "done activate"},
			hardware: []string{"is_on n1", "off n1", "is_on n1", "detach n1 p-acme", "connect n1 p-globex"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture(tc.from, tc.to)
			f.hw.on, f.hw.noPower = !tc.off, tc.noPower
			if tc.noDisks {
				f.m.Disks = nil
			}
			h, err := f.run(t)
			wantErrContaining(t, err, "")
			if h.Status != lease.HandoverDone || h.Step != lease.StepDone || h.Attempts != 0 {
				t.Errorf("returned handover = %+v, want done", h)
			}
			if f.j.saved.Status != lease.HandoverDone {
				t.Errorf("journal left the handover %s at %s", f.j.saved.Status, f.j.saved.Step)
			}
			wantEvents(t, "journal", f.ev.only(journalEvents...), tc.journal)
			wantEvents(t, "hardware", f.ev.only(hardwareEvents...), tc.hardware)
			if f.hw.on && !tc.noPower {
				t.Error("node left on")
			}
		})
	}
}

// TestMachineRunOrder checks the interleaving of journal, hooks and
// hardware for one step: intent is journaled before the step acts, and
// the outcome after; detach from the old project strictly precedes
// connect to the new one.
func TestMachineRunOrder(t *testing.T) {
	f := newFixture("acme", "globex")
	if _, err := f.run(t); err != nil {
		t.Fatal(err)
	}
	step := func(s lease.Step, hw ...string) []string {
		out := []string{"intent " + string(s), "hook " + string(s) + ":intent"}
		out = append(out, hw...)
		return append(out, "hook "+string(s)+":acted", "done "+string(s), "hook "+string(s)+":done")
	}
	var want []string
	want = append(want, step(lease.StepFence)...)
	want = append(want, step(lease.StepPowerOff, "is_on n1", "off n1", "is_on n1")...)
	want = append(want, step(lease.StepUnbindDisk, "unbind n1 acme")...)
	want = append(want, step(lease.StepDetach, "detach n1 p-acme")...)
	want = append(want, step(lease.StepConnect, "connect n1 p-globex")...)
	want = append(want, step(lease.StepActivate)...)
	wantEvents(t, "events", f.ev.all, want)
}

// TestMachineRunPowerOffWait runs the power-off step in a synctest bubble,
// so waiting for the node to read off costs no real time and the virtual
// time it took is exact.
func TestMachineRunPowerOffWait(t *testing.T) {
	errBMC := errors.New("bmc timeout")
	tests := map[string]struct {
		lag      int
		lagErr   error
		wantTook time.Duration
		wantErr  string
		wantIs   error
	}{
		"off at once":                      {lag: 0, wantTook: 0},
		"off after three polls":            {lag: 3, wantTook: 3 * time.Second},
		"read errors, then off":            {lag: 2, lagErr: errBMC, wantTook: 2 * time.Second},
		"never off: timeout":               {lag: -1, wantTook: 10 * time.Second, wantErr: "step power_off: node did not power off within 10s: still on"},
		"read errors until timeout: cause": {lag: -1, lagErr: errBMC, wantTook: 10 * time.Second, wantErr: "did not power off within 10s: bmc timeout", wantIs: errBMC},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFixture("acme", "globex")
				f.hw.lag, f.hw.lagErr = tc.lag, tc.lagErr
				start := time.Now()
				h, err := f.run(t)
				took := time.Since(start)
				wantErrContaining(t, err, tc.wantErr)
				if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
					t.Errorf("error %v does not wrap %v", err, tc.wantIs)
				}
				if took != tc.wantTook {
					t.Errorf("took %s of virtual time, want %s", took, tc.wantTook)
				}
				if tc.wantErr == "" {
					if h.Status != lease.HandoverDone {
						t.Errorf("handover = %+v, want done", h)
					}
					return
				}
				if h.Status != lease.HandoverRunning || h.Step != lease.StepPowerOff || h.Attempts != 1 {
					t.Errorf("handover = %+v, want running at power_off after 1 attempt", h)
				}
				if got := f.ev.only("detach", "connect"); len(got) != 0 {
					t.Errorf("node still on, yet the handover went on: %q", got)
				}
			})
		})
	}
}

// TestMachineRunStepFails: a failing step is journaled as failed, counts
// an attempt, stops the run and leaves the handover running at that step;
// nothing after it happens.
func TestMachineRunStepFails(t *testing.T) {
	errX := errors.New("boom")
	tests := map[string]struct {
		op       string
		step     lease.Step
		wantErr  string
		hardware []string
	}{
		"read power":  {op: "is_on", step: lease.StepPowerOff, wantErr: "step power_off: read power: boom", hardware: []string{"is_on n1"}},
		"power off":   {op: "off", step: lease.StepPowerOff, wantErr: "step power_off: power off: boom", hardware: []string{"is_on n1", "off n1"}},
		"unbind disk": {op: "unbind", step: lease.StepUnbindDisk, wantErr: "step unbind_disk: boom"},
		"detach":      {op: "detach", step: lease.StepDetach, wantErr: "handover 7 of n1: step detach: boom"},
		"connect":     {op: "connect", step: lease.StepConnect, wantErr: "step connect: boom"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture("acme", "globex")
			f.hw.fail = map[string]error{tc.op: errX}
			h, err := f.run(t)
			wantErrContaining(t, err, tc.wantErr)
			if !errors.Is(err, errX) {
				t.Errorf("error %v does not wrap the step's", err)
			}
			if h.Status != lease.HandoverRunning || h.Step != tc.step || h.Attempts != 1 || !strings.Contains(h.LastError, "boom") {
				t.Errorf("returned handover = %+v, want running at %s, 1 attempt, last error boom", h, tc.step)
			}
			if f.j.saved.Step != tc.step || f.j.saved.Attempts != 1 || f.j.saved.Status != lease.HandoverRunning {
				t.Errorf("journal saved %+v", f.j.saved)
			}
			j := f.ev.only(journalEvents...)
			if want := []string{"intent " + string(tc.step), "failed " + string(tc.step) + " (stuck=false)"}; !slices.Equal(j[len(j)-2:], want) {
				t.Errorf("journal ends %q, want %q", j, want)
			}
			hw := f.ev.only(hardwareEvents...)
			if tc.hardware != nil {
				wantEvents(t, "hardware", hw, tc.hardware)
			}
			if last := hw[len(hw)-1]; !strings.HasPrefix(last, tc.op) {
				t.Errorf("hardware was driven after the failing %s: %q", tc.op, hw)
			}
			if slices.Contains(f.ev.all, "hook "+string(tc.step)+":acted") {
				t.Error("the failed step reported acted")
			}
		})
	}
}

// TestMachineRunStuck: each pass retries the failing step; the
// MaxAttempts-th failure marks the handover stuck and later runs do
// nothing; once an admin resets it, it resumes at the failed step.
func TestMachineRunStuck(t *testing.T) {
	f := newFixture("acme", "globex")
	f.hw.fail = map[string]error{"detach": errors.New("allocator down")}
	for attempt := 1; attempt <= 3; attempt++ {
		h, err := f.run(t)
		wantErrContaining(t, err, "allocator down")
		wantStatus := lease.HandoverRunning
		if attempt == 3 {
			wantStatus = lease.HandoverStuck
		}
		if h.Status != wantStatus || h.Attempts != attempt || f.j.saved.Status != wantStatus || f.j.saved.Attempts != attempt {
			t.Fatalf("after failure %d: returned %+v, saved %+v; want %s", attempt, h, f.j.saved, wantStatus)
		}
	}
	wantEvents(t, "failures", f.ev.only("failed"),
		[]string{"failed detach (stuck=false)", "failed detach (stuck=false)", "failed detach (stuck=true)"})

	before := len(f.ev.all)
	h, err := f.run(t)
	if err != nil || h.Status != lease.HandoverStuck || len(f.ev.all) != before {
		t.Fatalf("run of a stuck handover: %+v, %v, events %q", h, err, f.ev.all[before:])
	}

	// An admin's retry: running again with a fresh count.
	delete(f.hw.fail, "detach")
	f.j.saved.Status, f.j.saved.Attempts = lease.HandoverRunning, 0
	before = len(f.ev.all)
	if h, err = f.run(t); err != nil || h.Status != lease.HandoverDone {
		t.Fatalf("after retry: %+v, %v", h, err)
	}
	wantEvents(t, "hardware after retry", (&events{f.ev.all[before:]}).only(hardwareEvents...),
		[]string{"detach n1 p-acme", "connect n1 p-globex"})
}

// TestMachineRunWaitIsNotAFailure: a step error wrapping ErrWait (HIL
// busy or down) is journaled with its reason but never counts toward
// MaxAttempts, however often it repeats.
func TestMachineRunWaitIsNotAFailure(t *testing.T) {
	f := newFixture("acme", "globex")
	f.hw.fail = map[string]error{"detach": fmt.Errorf("%w: network action PENDING", lease.ErrWait)}
	for range 5 {
		h, err := f.run(t)
		if !errors.Is(err, lease.ErrWait) {
			t.Fatalf("err %v, want one matching ErrWait", err)
		}
		if h.Status != lease.HandoverRunning || h.Attempts != 0 || f.j.saved.Attempts != 0 || f.j.saved.Status != lease.HandoverRunning {
			t.Fatalf("returned %+v, saved %+v; want running with 0 attempts", h, f.j.saved)
		}
		if !strings.Contains(f.j.saved.LastError, "network action PENDING") {
			t.Fatalf("last error %q does not say why it waits", f.j.saved.LastError)
		}
	}
	// A real failure after waits counts from 1.
	f.hw.fail["detach"] = errors.New("allocator broken")
	if h, _ := f.run(t); h.Attempts != 1 {
		t.Fatalf("attempts after one failure: %d, want 1", h.Attempts)
	}
	delete(f.hw.fail, "detach")
	if h, err := f.run(t); err != nil || h.Status != lease.HandoverDone {
		t.Fatalf("after the wait: %+v, %v", h, err)
	}
}

// TestMachineRunFreeNodeOffAfterConnect: a free node whose power is out
// of reach until it is connected (HIL disables a free node's OBM) is still
// powered off before its first tenant gets it.
func TestMachineRunFreeNodeOffAfterConnect(t *testing.T) {
	f := newFixture("", "globex")
	f.hw.noPowerUntilConnect = true
	h, err := f.run(t)
	if err != nil || h.Status != lease.HandoverDone {
		t.Fatalf("run: %+v, %v", h, err)
	}
	if f.hw.on {
		t.Fatal("the node reached its first tenant powered on")
	}
	wantEvents(t, "hardware", f.ev.only(hardwareEvents...),
		[]string{"is_on n1", "connect n1 p-globex", "is_on n1", "off n1", "is_on n1"})
	// A node moving between tenants was powered off before detach: no
	// second check.
	g := newFixture("acme", "globex")
	if _, err := g.run(t); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, "hardware between tenants", g.ev.only(hardwareEvents...),
		[]string{"is_on n1", "off n1", "is_on n1", "unbind n1 acme", "detach n1 p-acme", "connect n1 p-globex"})
}

func TestMachineRunMaxAttemptsZeroNeverSticks(t *testing.T) {
	f := newFixture("acme", "globex")
	f.m.MaxAttempts = 0
	f.hw.fail = map[string]error{"connect": errors.New("nope")}
	for range 10 {
		if _, err := f.run(t); err == nil {
			t.Fatal("connect failure not reported")
		}
	}
	if f.j.saved.Status != lease.HandoverRunning || f.j.saved.Attempts != 10 {
		t.Fatalf("saved %+v, want running after 10 attempts", f.j.saved)
	}
}

// TestMachineRunResume: a handover read back at any step after a crash
// runs from that step on, repeating it, and never earlier steps.
func TestMachineRunResume(t *testing.T) {
	tests := map[string]struct {
		step     lease.Step
		hardware []string
	}{
		"at fence":       {step: lease.StepFence, hardware: []string{"is_on n1", "off n1", "is_on n1", "unbind n1 acme", "detach n1 p-acme", "connect n1 p-globex"}},
		"at power_off":   {step: lease.StepPowerOff, hardware: []string{"is_on n1", "off n1", "is_on n1", "unbind n1 acme", "detach n1 p-acme", "connect n1 p-globex"}},
		"at unbind_disk": {step: lease.StepUnbindDisk, hardware: []string{"unbind n1 acme", "detach n1 p-acme", "connect n1 p-globex"}},
		"at detach":      {step: lease.StepDetach, hardware: []string{"detach n1 p-acme", "connect n1 p-globex"}},
		"at connect":     {step: lease.StepConnect, hardware: []string{"connect n1 p-globex"}},
		"at activate":    {step: lease.StepActivate},
		"at done":        {step: lease.StepDone},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture("acme", "globex")
			f.j.saved.Step = tc.step
			if tc.step != lease.StepDone {
				f.j.saved.Attempts, f.j.saved.LastError = 1, "earlier failure"
			}
			h, err := f.run(t)
			if err != nil || h.Status != lease.HandoverDone || h.Attempts != 0 || h.LastError != "" {
				t.Fatalf("resumed at %s: %+v, %v", tc.step, h, err)
			}
			wantEvents(t, "hardware", f.ev.only(hardwareEvents...), tc.hardware)
			var want []string
			for _, s := range lease.Steps[slices.Index(lease.Steps, tc.step):] {
				if s != lease.StepDone {
					want = append(want, "intent "+string(s))
				}
			}
			wantEvents(t, "intents", f.ev.only("intent"), want)
		})
	}
}

// TestMachineRunCrashAfterAct: the process dies after detach acted but
// before its outcome was journaled. The journal still says detach, so the
// next run repeats it (detach is idempotent) and finishes.
func TestMachineRunCrashAfterAct(t *testing.T) {
	f := newFixture("acme", "globex")
	hook := f.m.Hook
	crash := errors.New("crash")
	f.m.Hook = func(p string) {
		hook(p)
		if p == "detach:acted" {
			panic(crash)
		}
	}
	func() {
		defer func() {
			if r := recover(); r != crash {
				t.Fatalf("recovered %v, want the simulated crash", r)
			}
		}()
		f.run(t)
	}()
	if f.j.saved.Step != lease.StepDetach || f.j.saved.Status != lease.HandoverRunning {
		t.Fatalf("journal after the crash: %+v", f.j.saved)
	}
	f.m.Hook = hook
	if h, err := f.run(t); err != nil || h.Status != lease.HandoverDone {
		t.Fatalf("resume: %+v, %v", h, err)
	}
	wantEvents(t, "hardware", f.ev.only("detach", "connect"),
		[]string{"detach n1 p-acme", "detach n1 p-acme", "connect n1 p-globex"})
	wantEvents(t, "journal of detach", f.ev.only("intent", "done")[6:10],
		[]string{"intent detach", "intent detach", "done detach", "intent connect"})
}

// TestMachineRunJournalFails: a journal write that fails stops the run
// where it is; a step whose intent could not be written does not act.
func TestMachineRunJournalFails(t *testing.T) {
	errDB := errors.New("disk full")
	tests := map[string]struct {
		write    string // "intent <step>", "complete <step>" or "failed <step>"
		hwFail   string // a hardware operation to fail as well
		wantErr  string
		wantStep lease.Step
		hardware []string
	}{
		"intent of fence":       {write: "intent fence", wantErr: "handover 7: journal fence intent: disk full", wantStep: lease.StepFence},
		"intent of power_off":   {write: "intent power_off", wantErr: "journal power_off intent: disk full", wantStep: lease.StepPowerOff},
		"intent of connect":     {write: "intent connect", wantErr: "journal connect intent", wantStep: lease.StepConnect, hardware: []string{"is_on n1", "off n1", "is_on n1", "unbind n1 acme", "detach n1 p-acme"}},
		"outcome of fence":      {write: "complete fence", wantErr: "journal fence done: disk full", wantStep: lease.StepFence},
		"outcome of detach":     {write: "complete detach", wantErr: "journal detach done: disk full", wantStep: lease.StepDetach, hardware: []string{"is_on n1", "off n1", "is_on n1", "unbind n1 acme", "detach n1 p-acme"}},
		"failure of power_off":  {write: "failed power_off", hwFail: "off", wantErr: "journal power_off failure: power off: bmc says no\ndisk full", wantStep: lease.StepPowerOff, hardware: []string{"is_on n1", "off n1"}},
		"outcome of activate":   {write: "complete activate", wantErr: "journal activate done", wantStep: lease.StepActivate, hardware: []string{"is_on n1", "off n1", "is_on n1", "unbind n1 acme", "detach n1 p-acme", "connect n1 p-globex"}},
		"unknown step (no I/O)": {wantErr: `step bogus: unknown step "bogus"`, wantStep: "bogus"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture("acme", "globex")
			f.j.fail = map[string]error{tc.write: errDB}
			if tc.hwFail != "" {
				f.hw.fail = map[string]error{tc.hwFail: errors.New("bmc says no")}
			}
			if tc.write == "" {
				f.j.saved.Step = "bogus"
			}
			h, err := f.run(t)
			wantErrContaining(t, err, tc.wantErr)
			if tc.write != "" && !errors.Is(err, errDB) {
				t.Errorf("error %v does not wrap the journal's", err)
			}
			if h.Step != tc.wantStep || h.Status != lease.HandoverRunning {
				t.Errorf("returned %+v, want running at %s", h, tc.wantStep)
			}
			wantEvents(t, "hardware", f.ev.only(hardwareEvents...), tc.hardware)
		})
	}
}
