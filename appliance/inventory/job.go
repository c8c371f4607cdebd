package inventory

import "time"

// JobKind is what a tenant job does.
type JobKind string

// The tenant jobs.
const (
	JobOnboard  JobKind = "onboard"
	JobOffboard JobKind = "offboard"
)

// JobState is where a tenant job, or one of its steps, is.
type JobState string

// A job is running until it is done or failed; its steps are pending
// until they run. A job of a restarted appliance that was running is run
// again from its first step: every step is idempotent.
const (
	JobPending JobState = "pending"
	JobRunning JobState = "running"
	JobDone    JobState = "done"
	JobFailed  JobState = "failed"
)

// TenantJob is one onboarding or offboarding of a tenant: named steps run
// in order. At most one job of a tenant runs at a time.
type TenantJob struct {
	ID     int64   `json:"id"`
	Tenant string  `json:"tenant"`
	Kind   JobKind `json:"kind"`
	// State is running, done or failed.
	State JobState `json:"state"`
	// Options are the kind's options as given (JSON), kept so that a job
	// run again after a restart runs as asked.
	Options string `json:"options,omitempty"`
	// Error is why the job failed.
	Error      string    `json:"error,omitempty"`
	Steps      []JobStep `json:"steps"`
	CreatedAt  time.Time `json:"created_at"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
}

// JobStep is one named step of a tenant job.
type JobStep struct {
	Name  string   `json:"name"`
	State JobState `json:"state"`
	// Detail says what the step did or, when it failed, why.
	Detail     string    `json:"detail,omitempty"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
}

// OffboardOptions say what an offboarding keeps.
type OffboardOptions struct {
	// KeepSecrets keeps the tenant's secrets (Foreman's admin password,
	// database password, encryption key): onboarding it again finds them.
	KeepSecrets bool `json:"keep_secrets,omitempty"`
	// KeepDisks keeps the tenant's M2 disks and snapshots.
	KeepDisks bool `json:"keep_disks,omitempty"`
}

// ForemanLogin is a tenant's Foreman administrator login.
type ForemanLogin struct {
	Tenant   string `json:"tenant"`
	URL      string `json:"foreman_url"`
	Username string `json:"username"`
	Password string `json:"password"`
}
