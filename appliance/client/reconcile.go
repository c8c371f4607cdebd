package client

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/malleable-cloud/malleable/appliance/lease"
)

// PassResult is what a reconcile pass did.
type PassResult struct {
	Nodes     int           `json:"nodes"`
	Started   int           `json:"started"`
	Resumed   int           `json:"resumed"`
	Completed int           `json:"completed"`
	Failed    int           `json:"failed"`
	Stuck     int           `json:"stuck"`
	Drift     int           `json:"drift"`
	Duration  time.Duration `json:"duration"`
}

// Pass states as the API reports them.
const (
	PassQueued  = "queued"
	PassRunning = "running"
	PassDone    = "done"
	PassFailed  = "failed"
)

// Pass is a reconcile pass: while it runs, its handovers' live steps.
type Pass struct {
	ID           int64          `json:"id"`
	Trigger      string         `json:"trigger"`
	By           string         `json:"requested_by,omitempty"`
	State        string         `json:"state"`
	QueuedBehind int64          `json:"queued_behind,omitempty"`
	StartedAt    time.Time      `json:"started_at,omitzero"`
	EndedAt      time.Time      `json:"ended_at,omitzero"`
	Error        string         `json:"error,omitempty"`
	Result       PassResult     `json:"result"`
	Handovers    []PassHandover `json:"handovers"`
}

// Ended reports whether the pass is over.
func (p Pass) Ended() bool { return p.State == PassDone || p.State == PassFailed }

// PassHandover is a handover within a pass, with the steps the pass ran.
type PassHandover struct {
	lease.Handover
	Steps []StepRun `json:"steps"`
}

// StepRun is one attempt at one handover step.
type StepRun struct {
	Step      lease.Step `json:"step"`
	StartedAt time.Time  `json:"started_at"`
	EndedAt   time.Time  `json:"ended_at,omitzero"`
	Outcome   string     `json:"outcome"` // running, done, skipped, failed, interrupted
	Detail    string     `json:"detail,omitempty"`
}

// Reconcile starts a reconcile pass in the appliance and returns at once;
// started is false when the answer is a pass that was already running
// (the appliance never runs two). Follow it with ReconcilePass.
func (c *Client) Reconcile(ctx context.Context) (p Pass, started bool, err error) {
	status, err := c.doStatus(ctx, http.MethodPost, "/api/v1/reconcile", nil, &p)
	return p, status == http.StatusAccepted, err
}

// ReconcilePass returns pass id; 0 is the latest (the running pass, else
// the last that ended).
func (c *Client) ReconcilePass(ctx context.Context, id int64) (Pass, error) {
	path := fmt.Sprintf("/api/v1/reconcile/passes/%d", id)
	if id == 0 {
		path = "/api/v1/reconcile/passes/latest"
	}
	var out Pass
	return out, c.do(ctx, http.MethodGet, path, nil, &out)
}

// Retry is the answer to a handover's retry: the handover, running again,
// and the pass that resumes it (none if the appliance could not start one
// now: then the next pass does).
type Retry struct {
	lease.Handover
	Pass *Pass `json:"pass,omitempty"`
}

// RetryHandover sets a stuck handover running again; a pass in the
// appliance resumes it.
func (c *Client) RetryHandover(ctx context.Context, id int64) (Retry, error) {
	var out Retry
	return out, c.do(ctx, http.MethodPost, fmt.Sprintf("/api/v1/handovers/%d/retry", id), nil, &out)
}
