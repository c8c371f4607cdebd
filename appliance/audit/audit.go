// Package audit defines the appliance's audit record: one line of the
// append-only log the store keeps and the admin API serves. It is pure data
// and imports nothing of ours, so API clients can use it without the store;
// Recorder and the actor carried in a context serve the APIs that write it.
package audit

import "time"

// Entry is one line of the append-only audit log.
type Entry struct {
	ID     int64     `json:"id"`
	At     time.Time `json:"at"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Target string    `json:"target"`
	Detail string    `json:"detail,omitempty"`
	Result string    `json:"result"`
}
