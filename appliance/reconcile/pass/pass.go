// Package pass holds a reconcile pass's record as the reconciler keeps it
// and the admin API reports it: pure data, shared by appliance/reconcile,
// the API's wire types and the Go client, so the client links no store.
package pass

import (
	"time"

	"github.com/malleable-cloud/malleable/appliance/lease"
)

// State is where a reconcile pass stands.
type State string

// Pass states.
const (
	// Queued: asked for while another pass ran (a retried handover
	// needs a pass that starts after the retry); it starts when that one
	// ends.
	Queued  State = "queued"
	Running State = "running"
	Done    State = "done"
	// Failed: the pass itself failed or was interrupted (shutdown);
	// a handover whose step failed does not fail the pass, see Result.
	Failed State = "failed"
)

// Pass triggers: who started a pass.
const (
	TriggerStartup = "startup"
	TriggerCron    = "cron"
	TriggerAPI     = "api"
	TriggerRetry   = "retry"
	TriggerDirect  = "direct" // reconcile.Reconciler.Pass called in-process
)

// Record is one reconcile pass as the admin API reports it: while it
// runs, its handovers' current steps; once it ended, what it did.
type Record struct {
	ID      int64  `json:"id"`
	Trigger string `json:"trigger"`
	By      string `json:"requested_by,omitempty"`
	State   State  `json:"state"`
	// QueuedBehind is the pass a queued pass waits for.
	QueuedBehind int64     `json:"queued_behind,omitempty"`
	StartedAt    time.Time `json:"started_at,omitzero"`
	EndedAt      time.Time `json:"ended_at,omitzero"`
	Error        string    `json:"error,omitempty"`
	Result       Result    `json:"result"`
	// Handovers are those the pass started or resumed, with their live
	// step, status and attempts.
	Handovers []Handover `json:"handovers"`
}

// Handover is a handover within a pass, with the steps the pass ran.
type Handover struct {
	lease.Handover
	Steps []StepRun `json:"steps"`
}

// StepRun is one attempt at one handover step, timed with the wall clock.
type StepRun struct {
	Step      lease.Step `json:"step"`
	StartedAt time.Time  `json:"started_at"`
	EndedAt   time.Time  `json:"ended_at,omitzero"`
	// Outcome is running, done, skipped, failed or interrupted.
	Outcome string `json:"outcome"`
	Detail  string `json:"detail,omitempty"`
}

// Result counts what one reconcile pass did.
type Result struct {
	Nodes     int           `json:"nodes"`
	Started   int           `json:"started"`
	Resumed   int           `json:"resumed"`
	Completed int           `json:"completed"`
	Failed    int           `json:"failed"`
	Stuck     int           `json:"stuck"`
	Drift     int           `json:"drift"`
	Duration  time.Duration `json:"duration"`
}

// Ended reports whether the pass is over.
func (r Record) Ended() bool { return r.State == Done || r.State == Failed }
