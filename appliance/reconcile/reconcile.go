// Package reconcile brings every node to the state its leases ask for:
// reconcile passes (one at a time, whoever asks), handover execution
// through lease.Machine, drift checks against the allocator, and the cron
// schedule that triggers passes.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/malleable-cloud/malleable/appliance/audit"
	"github.com/malleable-cloud/malleable/appliance/lease"
	"github.com/malleable-cloud/malleable/appliance/power"
	"github.com/malleable-cloud/malleable/appliance/reconcile/pass"
	"github.com/malleable-cloud/malleable/appliance/store"
)

// Allocator is what the reconciler asks an allocator directly (moves and
// power go through the handover's Machine): each node's project, for the
// drift check. hil.Client or the embedded allocator.
type Allocator interface {
	NodeProject(ctx context.Context, node string) (string, error)
}

// projectLister is implemented by allocators that can list every node's
// project in one call; the drift check needs it.
type projectLister interface {
	NodeProjects(ctx context.Context) (map[string]string, error)
}

// freeLister is implemented by allocators whose NodeProjects lists free
// nodes too (mapped to ""), so that a node missing from it is one the
// allocator does not know: hil.Client.
type freeLister interface {
	ListsFreeNodes() bool
}

// ErrAllocatorLostState is returned by a drift check when the allocator
// does not know nodes the appliance has, as when HIL restarted on an empty
// database.
var ErrAllocatorLostState = errors.New("the allocator does not know some of the appliance's nodes")

// Reconciler brings every node to the state its leases ask for: at each
// lease boundary it opens a handover and runs it, resumes handovers left
// running by a crash, and reports nodes whose allocator project disagrees
// with the store.
type Reconciler struct {
	Store       *store.Store
	Machine     *lease.Machine
	Allocator   Allocator
	Log         *slog.Logger
	Now         func() time.Time
	Concurrency int // handovers run at once
	Metrics     *Metrics
	// Power, if set, is the plane the broker uses: a drift fence takes
	// the node's gate exclusively and drops its cached power.
	Power *power.Plane

	passes passTracker // one pass at a time, whoever triggers it; the last ones

	// lostState is the last list of nodes the allocator did not know, so
	// that the audit log records a change, not every pass. Only the
	// running pass touches it, and passes never overlap.
	lostState string
	// drifted is each drifted node's last reported detail, so that a node
	// left drifted (a free node someone put in a project by hand) is
	// audited when its drift changes, not every pass. Only the running
	// pass touches it.
	drifted map[string]string
}

// Pass runs one reconcile pass at the reconciler's now, in ctx, after the
// pass running (if any) ends.
func (r *Reconciler) Pass(ctx context.Context) (pass.Result, error) {
	return r.PassAs(ctx, pass.TriggerDirect, "")
}

// PassAs runs a pass recorded as started by trigger on behalf of by.
func (r *Reconciler) PassAs(ctx context.Context, trigger, by string) (pass.Result, error) {
	p, err := r.passes.begin(ctx, trigger, by)
	if err != nil {
		return pass.Result{}, err
	}
	return r.execute(ctx, p)
}

// execute runs the pass p, which the tracker has made current, and records
// how it ended.
func (r *Reconciler) execute(ctx context.Context, p *passRun) (res pass.Result, err error) {
	start := time.Now()
	defer func() {
		if v := recover(); v != nil {
			// Keep the tracker consistent, then let the caller's
			// recovery (cron's) deal with the panic.
			r.passes.finish(p, res, fmt.Errorf("pass panicked: %v", v))
			panic(v)
		}
	}()
	now := r.Now()
	res, err = r.pass(ctx, now, p)
	res.Duration = time.Since(start)
	recErr := err
	if recErr == nil && ctx.Err() != nil {
		// Its handovers stopped where they were; the next pass resumes them.
		recErr = fmt.Errorf("interrupted: %w", ctx.Err())
	}
	r.passes.finish(p, res, recErr)
	if r.Metrics != nil {
		r.Metrics.observe(res, err)
	}
	level := slog.LevelDebug // the schedule runs idle passes every few seconds
	switch {
	case err != nil || res.Failed > 0 || res.Drift > 0:
		level = slog.LevelWarn
	case res.Started > 0 || res.Resumed > 0 || res.Completed > 0:
		level = slog.LevelInfo
	}
	r.Log.Log(ctx, level, "reconcile pass", "pass", p.rec.ID, "trigger", p.rec.Trigger, "nodes", res.Nodes,
		"started", res.Started, "resumed", res.Resumed, "completed", res.Completed, "failed", res.Failed, "stuck", res.Stuck, "drift", res.Drift,
		"duration_ms", res.Duration.Milliseconds(), "err", err)
	return res, err
}

func (r *Reconciler) pass(ctx context.Context, now time.Time, p *passRun) (pass.Result, error) {
	var res pass.Result
	states, err := r.Store.NodeStates(ctx, now)
	if err != nil {
		return res, err
	}
	res.Nodes = len(states)
	var work []lease.Handover
	busy := map[string]bool{}
	for _, ns := range states {
		switch {
		case ns.Open != nil && ns.Open.Status == lease.HandoverStuck:
			res.Stuck++
			busy[ns.Node] = true
		case ns.Open != nil:
			res.Resumed++
			work = append(work, *ns.Open)
			busy[ns.Node] = true
		case ns.Holder != ns.Lessee:
			h, err := r.Store.CreateHandover(ctx, ns.Node, ns.Holder, ns.Lessee, now)
			if err != nil {
				return res, err
			}
			r.audit(ctx, "handover.start", ns.Node, fmt.Sprintf("handover %d: %s → %s", h.ID, orNone(ns.Holder), orNone(ns.Lessee)), nil)
			res.Started++
			work = append(work, h)
			busy[ns.Node] = true
		}
	}
	r.passes.track(p, work)
	drift, err := r.checkDrift(ctx, states, busy)
	res.Drift = drift
	if err != nil {
		r.Log.Warn("drift check failed", "err", err)
	}

	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, r.Concurrency))
	for _, h := range work {
		g.Go(func() error {
			out, err := r.runHandover(gctx, h, p)
			r.passes.settle(p, out, err)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil && gctx.Err() != nil:
				// Shutting down: the handover resumes at the next start.
			case err != nil && out.Status == lease.HandoverStuck:
				res.Failed++
				res.Stuck++
				r.audit(ctx, "handover.stuck", h.Node, fmt.Sprintf("handover %d at step %s", h.ID, out.Step), err)
			case errors.Is(err, lease.ErrWait):
				// Not a failure: the step is retried at the next pass.
				r.Log.Warn("handover waits; will retry", "node", h.Node, "handover", h.ID, "step", out.Step, "err", err)
				if out.LastError != h.LastError { // once per reason, not every pass
					r.auditResult(ctx, "handover.wait", h.Node, fmt.Sprintf("handover %d at step %s", h.ID, out.Step), "waiting: "+err.Error())
				}
			case err != nil:
				res.Failed++
				r.Log.Warn("handover step failed; will retry", "node", h.Node, "handover", h.ID, "step", out.Step, "attempts", out.Attempts, "err", err)
			default:
				res.Completed++
				r.audit(ctx, "handover.done", h.Node, fmt.Sprintf("handover %d: %s → %s", h.ID, orNone(h.From), orNone(h.To)), nil)
			}
			return nil // one node's failure never stops the others
		})
	}
	err = g.Wait()
	return res, err
}

// runHandover runs one handover of pass p, turning a panic into an error so
// that one node's bug cannot take the appliance down.
func (r *Reconciler) runHandover(ctx context.Context, h lease.Handover, p *passRun) (out lease.Handover, err error) {
	defer func() {
		if v := recover(); v != nil {
			out, err = h, fmt.Errorf("handover %d of %s panicked: %v", h.ID, h.Node, v)
		}
	}()
	// A copy of the machine whose journal also reports progress to the
	// pass's record.
	m := *r.Machine
	m.Journal = progressJournal{Journal: m.Journal, t: &r.passes, run: p}
	return m.Run(ctx, h)
}

// checkDrift compares the allocator's projects with the holders of nodes
// that have no handover under way. A node in a project other than its
// holder's is fenced (its holder cleared) and reported. Nodes the
// allocator does not know at all are not fenced one by one: that is the
// allocator's lost state, reported as ErrAllocatorLostState.
func (r *Reconciler) checkDrift(ctx context.Context, states []store.NodeState, busy map[string]bool) (int, error) {
	lister, ok := r.Allocator.(projectLister)
	if !ok {
		return 0, nil
	}
	projects, err := lister.NodeProjects(ctx)
	if err != nil {
		return 0, err
	}
	fl, ok := r.Allocator.(freeLister)
	complete := ok && fl.ListsFreeNodes()
	drift := 0
	var missing []string
	seen := map[string]string{}
	defer func() { r.drifted = seen }()
	for _, ns := range states {
		if _, known := projects[ns.Node]; complete && !known {
			missing = append(missing, ns.Node)
			continue
		}
		if busy[ns.Node] {
			continue
		}
		want := ""
		if ns.Holder != "" {
			want = r.Machine.Project(ns.Holder)
		}
		got := projects[ns.Node]
		if got == want {
			continue
		}
		drift++
		detail := fmt.Sprintf("allocator has it in project %q, expected %q", got, want)
		seen[ns.Node] = detail
		var ferr error
		if ns.Holder != "" {
			ferr = r.fence(ctx, ns.Node)
			detail += "; fenced from " + ns.Holder
		} else if r.drifted[ns.Node] == detail {
			// Already reported, and nothing to fence: say it once.
			r.Log.Debug("node drift", "node", ns.Node, "detail", detail)
			continue
		}
		r.Log.Warn("node drift", "node", ns.Node, "detail", detail)
		r.audit(ctx, "node.drift", ns.Node, detail, ferr)
	}
	return drift, r.lostStateError(ctx, missing, len(states))
}

// lostStateError reports the nodes the allocator does not know: a
// warning every pass, an audit entry when the list changes.
func (r *Reconciler) lostStateError(ctx context.Context, missing []string, total int) error {
	list := strings.Join(missing, ", ")
	changed := list != r.lostState
	r.lostState = list
	if len(missing) == 0 {
		return nil
	}
	err := fmt.Errorf("%w: HIL does not know %d of the appliance's %d nodes (%s); HIL has likely lost its state "+
		"(restarted on an empty database?): register them in HIL again under the same names, free, with their OBMs "+
		"in OBMd; until then their power is refused and they are not fenced", ErrAllocatorLostState, len(missing), total, list)
	if changed {
		e := audit.Entry{At: r.Now(), Actor: "reconciler", Action: "allocator.lost_state", Target: "allocator",
			Detail: fmt.Sprintf("nodes unknown to HIL: %s", list), Result: "failed: " + err.Error()}
		if _, aerr := r.Store.AppendAudit(context.WithoutCancel(ctx), e); aerr != nil {
			r.Log.Error("audit log write failed", "action", e.Action, "err", aerr)
		}
	}
	return err
}

// fence takes node from its holder outside a handover.
func (r *Reconciler) fence(ctx context.Context, node string) error {
	if r.Power == nil {
		return r.Store.Fence(ctx, node)
	}
	return r.Power.Fence(node, func() error { return r.Store.Fence(ctx, node) })
}

func (r *Reconciler) audit(ctx context.Context, action, node, detail string, err error) {
	result := "ok"
	if err != nil {
		result = "failed: " + err.Error()
	}
	r.auditResult(ctx, action, node, detail, result)
}

func (r *Reconciler) auditResult(ctx context.Context, action, node, detail, result string) {
	e := audit.Entry{At: r.Now(), Actor: "reconciler", Action: action, Target: "node/" + node, Detail: detail, Result: result}
	if _, aerr := r.Store.AppendAudit(context.WithoutCancel(ctx), e); aerr != nil {
		r.Log.Error("audit log write failed", "action", action, "node", node, "err", aerr)
	}
}

func orNone(s string) string {
	if s == "" {
		return "(free)"
	}
	return s
}

// Metrics are the reconciler's Prometheus metrics.
type Metrics struct {
	passes   *prometheus.CounterVec
	duration prometheus.Histogram
	outcomes *prometheus.CounterVec
	stuck    prometheus.Gauge
}

// NewMetrics registers the reconciler's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		passes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "malleable_reconcile_passes_total",
			Help: "Reconcile passes by result (ok or error)."}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "malleable_reconcile_pass_duration_seconds",
			Help: "Duration of reconcile passes.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 9)}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "malleable_handovers_total",
			Help: "Handover outcomes: started, resumed, completed, failed (a step failed), drift (node fenced for drift)."}, []string{"outcome"}),
		stuck: prometheus.NewGauge(prometheus.GaugeOpts{Name: "malleable_handovers_stuck",
			Help: "Handovers stuck after repeated failures, waiting for an admin's retry."}),
	}
	reg.MustRegister(m.passes, m.duration, m.outcomes, m.stuck)
	return m
}

func (m *Metrics) observe(res pass.Result, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.passes.WithLabelValues(result).Inc()
	m.duration.Observe(res.Duration.Seconds())
	m.outcomes.WithLabelValues("started").Add(float64(res.Started))
	m.outcomes.WithLabelValues("resumed").Add(float64(res.Resumed))
	m.outcomes.WithLabelValues("completed").Add(float64(res.Completed))
	m.outcomes.WithLabelValues("failed").Add(float64(res.Failed))
	m.outcomes.WithLabelValues("drift").Add(float64(res.Drift))
	m.stuck.Set(float64(res.Stuck))
}
