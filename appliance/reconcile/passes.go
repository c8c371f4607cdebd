package reconcile

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/malleable-cloud/malleable/appliance/lease"
	"github.com/malleable-cloud/malleable/appliance/reconcile/pass"
)

// PassHistory is how many ended passes the reconciler remembers.
const PassHistory = 20

// ErrNotServing is what Start answers once Serve has returned (the
// appliance is shutting down).
var ErrNotServing = errors.New("the reconciler is not running")

// passRun is a pass's record plus what the tracker needs to run it.
type passRun struct {
	rec     pass.Record
	byServe bool // Serve runs it (Start asked for it), not the caller
	started bool
	done    chan struct{} // closed when the pass ended
}

// passTracker serialises passes and remembers them. Its zero value is
// ready to use.
type passTracker struct {
	mu      sync.Mutex
	nextID  int64
	current *passRun // the running pass; at most one
	queued  *passRun // the pass to run when current ends
	history []*passRun
	stopped bool          // Serve has returned: nothing runs Start's passes
	kick    chan struct{} // tells Serve that current is its to run
}

// kickChan returns the channel that wakes Serve; the lock must be held.
func (t *passTracker) kickChan() chan struct{} {
	if t.kick == nil {
		t.kick = make(chan struct{}, 1)
	}
	return t.kick
}

func (t *passTracker) newRun(trigger, by string, state pass.State) *passRun {
	t.nextID++
	p := &passRun{rec: pass.Record{ID: t.nextID, Trigger: trigger, By: by, State: state, Handovers: []pass.Handover{}},
		done: make(chan struct{})}
	if state == pass.Running {
		p.rec.StartedAt = time.Now()
	}
	return p
}

// begin waits until no pass runs, then makes a new one current, to be run
// by the caller.
func (t *passTracker) begin(ctx context.Context, trigger, by string) (*passRun, error) {
	t.mu.Lock()
	for t.current != nil {
		done := t.current.done
		t.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		t.mu.Lock()
	}
	defer t.mu.Unlock()
	p := t.newRun(trigger, by, pass.Running)
	p.started = true
	t.current = p
	return p, nil
}

// join returns the running pass, if any.
func (t *passTracker) join() *passRun {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.current
}

// start asks Serve for a pass. With fresh, a pass already running does not
// do (a retried handover needs one that starts after the retry), so one is
// queued behind it. It reports whether it made a new pass.
func (t *passTracker) start(trigger, by string, fresh bool) (pass.Record, bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.stopped:
		return pass.Record{}, false, ErrNotServing
	case t.current == nil:
		p := t.newRun(trigger, by, pass.Running)
		p.byServe = true
		t.current = p
		t.kickChan() <- struct{}{} // never blocks: one current at a time, and Serve drains it
		return p.snapshot(), true, nil
	case !fresh:
		return t.current.snapshot(), false, nil
	case t.queued != nil:
		return t.queued.snapshot(), false, nil
	}
	p := t.newRun(trigger, by, pass.Queued)
	p.byServe = true
	p.rec.QueuedBehind = t.current.rec.ID
	t.queued = p
	return p.snapshot(), true, nil
}

// finish records how p ended and promotes the queued pass, if any.
func (t *passTracker) finish(p *passRun, res pass.Result, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p.rec.EndedAt = time.Now()
	p.rec.Result = res
	p.rec.State = pass.Done
	if err != nil {
		p.rec.State = pass.Failed
		p.rec.Error = err.Error()
	}
	t.remember(p)
	t.current = nil
	if q := t.queued; q != nil {
		t.queued = nil
		q.rec.State, q.rec.StartedAt, q.rec.QueuedBehind = pass.Running, time.Now(), 0
		t.current = q
		t.kickChan() <- struct{}{}
	}
}

// abandon ends a pass Serve will not run because it is stopping.
func (t *passTracker) abandon(p *passRun) {
	if p == nil || !p.byServe || p.started {
		return
	}
	p.rec.State, p.rec.EndedAt, p.rec.Error = pass.Failed, time.Now(), "not run: the appliance is shutting down"
	t.remember(p)
}

// remember adds the ended pass p to the history and wakes its waiters; the
// lock must be held.
func (t *passTracker) remember(p *passRun) {
	t.history = append(t.history, p)
	if len(t.history) > PassHistory {
		t.history = slices.Delete(t.history, 0, len(t.history)-PassHistory)
	}
	close(p.done)
}

// get returns pass id's record; id 0 is the latest: the running pass, else
// the last one that ended.
func (t *passTracker) get(id int64) (pass.Record, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if id == 0 {
		if t.current != nil {
			return t.current.snapshot(), true
		}
		if n := len(t.history); n > 0 {
			return t.history[n-1].snapshot(), true
		}
		return pass.Record{}, false
	}
	for _, p := range append([]*passRun{t.current, t.queued}, t.history...) {
		if p != nil && p.rec.ID == id {
			return p.snapshot(), true
		}
	}
	return pass.Record{}, false
}

// snapshot copies p's record; the tracker's lock must be held.
func (p *passRun) snapshot() pass.Record {
	out := p.rec
	out.Handovers = make([]pass.Handover, len(p.rec.Handovers))
	for i, h := range p.rec.Handovers {
		h.Steps = slices.Clone(h.Steps)
		out.Handovers[i] = h
	}
	return out
}

// track adds the handovers a pass is about to run to its record.
func (t *passTracker) track(p *passRun, hs []lease.Handover) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, h := range hs {
		p.rec.Handovers = append(p.rec.Handovers, pass.Handover{Handover: h, Steps: []pass.StepRun{}})
	}
}

// update applies f to handover id of p's record.
func (t *passTracker) update(p *passRun, id int64, f func(h *pass.Handover)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range p.rec.Handovers {
		if h := &p.rec.Handovers[i]; h.ID == id {
			f(h)
			h.UpdatedAt = time.Now()
			return
		}
	}
}

// endStep closes h's running step with outcome.
func endStep(h *pass.Handover, outcome, detail string) {
	if n := len(h.Steps); n > 0 && h.Steps[n-1].Outcome == "running" {
		s := &h.Steps[n-1]
		s.EndedAt, s.Outcome, s.Detail = time.Now(), outcome, detail
	}
}

// progressJournal passes a handover's journal writes through and mirrors
// them into the running pass's record, so the API shows live progress.
type progressJournal struct {
	lease.Journal
	t   *passTracker
	run *passRun
}

func (j progressJournal) Intent(ctx context.Context, h lease.Handover, step lease.Step) error {
	err := j.Journal.Intent(ctx, h, step)
	if err == nil {
		j.t.update(j.run, h.ID, func(ph *pass.Handover) {
			ph.Step = step
			ph.Steps = append(ph.Steps, pass.StepRun{Step: step, StartedAt: time.Now(), Outcome: "running"})
		})
	}
	return err
}

func (j progressJournal) Complete(ctx context.Context, h lease.Handover, step lease.Step, skipped string) error {
	err := j.Journal.Complete(ctx, h, step, skipped)
	if err == nil {
		j.t.update(j.run, h.ID, func(ph *pass.Handover) {
			outcome := "done"
			if skipped != "" {
				outcome = "skipped"
			}
			endStep(ph, outcome, skipped)
			ph.Step, ph.Attempts, ph.LastError = step.Next(), 0, ""
			if ph.Step == lease.StepDone {
				ph.Status = lease.HandoverDone
			}
		})
	}
	return err
}

func (j progressJournal) Failed(ctx context.Context, h lease.Handover, step lease.Step, serr error, stuck bool) error {
	err := j.Journal.Failed(ctx, h, step, serr, stuck)
	j.t.update(j.run, h.ID, func(ph *pass.Handover) {
		endStep(ph, "failed", serr.Error())
		ph.Attempts, ph.LastError = h.Attempts, h.LastError
		if stuck {
			ph.Status = lease.HandoverStuck
		}
	})
	return err
}

// settle records how a handover's run ended: its final state, and a step
// left running by an interruption.
func (t *passTracker) settle(p *passRun, out lease.Handover, err error) {
	t.update(p, out.ID, func(ph *pass.Handover) {
		if err != nil {
			endStep(ph, "interrupted", err.Error())
		}
		ph.Step, ph.Status, ph.Attempts, ph.LastError = out.Step, out.Status, out.Attempts, out.LastError
	})
}

// Serve runs the passes that Start asks for (also those asked for before
// it started), in ctx — the daemon's, not a
// request's — until ctx ends; then it waits for the pass it runs, which
// ctx's end interrupts (its handovers resume at the next start).
func (r *Reconciler) Serve(ctx context.Context) error {
	t := &r.passes
	t.mu.Lock()
	kick := t.kickChan()
	t.stopped = false
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		t.stopped = true
		t.abandon(t.queued)
		t.queued = nil
		if c := t.current; c != nil && c.byServe && !c.started {
			t.abandon(c)
			t.current = nil
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
		}
		t.mu.Lock()
		p := t.current
		run := p != nil && p.byServe && !p.started
		if run {
			p.started = true
		}
		t.mu.Unlock()
		if run {
			r.serveOne(ctx, p)
		}
	}
}

// serveOne runs p for Serve; a panic (a bug) is logged, and the daemon and
// later passes go on, as they would after a panicking request.
func (r *Reconciler) serveOne(ctx context.Context, p *passRun) {
	defer func() {
		if v := recover(); v != nil {
			r.Log.Error("reconcile pass panicked", "pass", p.rec.ID, "panic", v)
		}
	}()
	_, _ = r.execute(ctx, p) // execute logs the outcome
}

// Start asks for a pass run by Serve, in the daemon's context, and returns
// its record at once; started is false when the answer is the pass that was
// already running (or, with fresh, already queued). With fresh, a running
// pass does not do: a new one is queued to start when it ends. by is who
// asked, for the record.
func (r *Reconciler) Start(trigger, by string, fresh bool) (rec pass.Record, started bool, err error) {
	return r.passes.start(trigger, by, fresh)
}

// LookupPass returns pass id (0: the latest) while the reconciler
// remembers it: the running and queued passes and the last 20 that ended.
func (r *Reconciler) LookupPass(id int64) (pass.Record, bool) {
	return r.passes.get(id)
}

// passOrJoin runs a pass for trigger, or, when one is already running,
// waits for that one instead of running another after it: what a
// scheduled tick wants.
func (r *Reconciler) passOrJoin(ctx context.Context, trigger string) {
	if p := r.passes.join(); p != nil {
		r.Log.Debug("reconcile pass already running; not starting another", "trigger", trigger, "pass", p.rec.ID)
		select {
		case <-p.done:
		case <-ctx.Done():
		}
		return
	}
	_, _ = r.PassAs(ctx, trigger, "")
}
