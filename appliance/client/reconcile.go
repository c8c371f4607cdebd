package client

import (
	"context"
	"fmt"
	"net/http"

	"github.com/malleable-cloud/malleable/appliance/api/wire"
	"github.com/malleable-cloud/malleable/appliance/reconcile/pass"
)

// A reconcile pass as the API reports it: the reconciler's own record
// types, from the pure package pass (one copy, shared with the server).
type (
	Pass         = pass.Record
	PassHandover = pass.Handover
	StepRun      = pass.StepRun
	PassResult   = pass.Result
	// Retry is the answer to a handover retry.
	Retry = wire.Retry
)

// Pass states as the API reports them.
const (
	PassQueued  = pass.Queued
	PassRunning = pass.Running
	PassDone    = pass.Done
	PassFailed  = pass.Failed
)

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

// RetryHandover sets a stuck handover running again; a pass in the
// appliance resumes it.
func (c *Client) RetryHandover(ctx context.Context, id int64) (Retry, error) {
	var out Retry
	return out, c.do(ctx, http.MethodPost, fmt.Sprintf("/api/v1/handovers/%d/retry", id), nil, &out)
}
