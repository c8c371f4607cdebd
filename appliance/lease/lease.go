// Package lease is the lease domain: who may use which node when. It is pure
// — no I/O, and the current time is always an argument — so every rule can be
// tested at any instant.
package lease

import (
	"errors"
	"fmt"
	"time"
)

// State is where a lease stands at a given instant. It is derived from the
// lease's interval and the current time, never stored.
type State string

// Lease states.
const (
	Scheduled State = "scheduled" // now < start
	Active    State = "active"    // start <= now < end
	Ended     State = "ended"     // end <= now
	Cancelled State = "cancelled" // withdrawn before it started
)

// ParseState parses a lease state name.
func ParseState(s string) (State, error) {
	switch st := State(s); st {
	case Scheduled, Active, Ended, Cancelled:
		return st, nil
	}
	return "", fmt.Errorf("unknown lease state %q (want scheduled, active, ended or cancelled)", s)
}

// Lease grants one tenant the use of one node over the half-open interval
// [Start, End), in UTC.
type Lease struct {
	ID        int64     `json:"id"`
	Node      string    `json:"node"`
	Tenant    string    `json:"tenant"`
	Start     time.Time `json:"start"`
	End       time.Time `json:"end"`
	Cancelled bool      `json:"cancelled,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// StateAt returns the lease's state at now.
func (l Lease) StateAt(now time.Time) State {
	switch {
	case l.Cancelled:
		return Cancelled
	case now.Before(l.Start):
		return Scheduled
	case now.Before(l.End):
		return Active
	default:
		return Ended
	}
}

// Limits bounds the leases an admin may create.
type Limits struct {
	MinDuration     time.Duration // shortest lease
	MaxDuration     time.Duration // longest lease, extensions included
	DefaultDuration time.Duration // used when a request names no end
	MaxAdvance      time.Duration // how far ahead a lease may start
}

// DefaultLimits are ESI-Leap's defaults: a week by default, three at most.
func DefaultLimits() Limits {
	return Limits{
		MinDuration:     time.Minute,
		MaxDuration:     21 * 24 * time.Hour,
		DefaultDuration: 7 * 24 * time.Hour,
		MaxAdvance:      365 * 24 * time.Hour,
	}
}

// ErrInvalid marks a lease request that breaks a rule: wrong order of
// times, too long, or entirely in the past.
var ErrInvalid = errors.New("invalid lease")

// ErrConflict marks a lease that would overlap another lease of its node.
var ErrConflict = errors.New("lease conflict")

// ErrIllegalState marks an operation that the lease's state forbids, such
// as extending an ended lease.
var ErrIllegalState = errors.New("illegal lease state")

// ConflictError names the existing lease that a request collides with.
type ConflictError struct {
	Existing Lease
}

// Error names the conflicting lease: node, tenant, interval and ID.
func (e *ConflictError) Error() string {
	return fmt.Sprintf("node %s is already leased to %s from %s to %s (lease %d)",
		e.Existing.Node, e.Existing.Tenant, e.Existing.Start.Format(time.RFC3339),
		e.Existing.End.Format(time.RFC3339), e.Existing.ID)
}

// Unwrap lets errors.Is(err, ErrConflict) match.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// Normalize truncates t to whole seconds in UTC: the resolution at which
// leases are stored and compared.
func Normalize(t time.Time) time.Time { return t.UTC().Truncate(time.Second) }

// CheckNew validates the interval of a new lease at now. Start and end must
// already be normalised.
func (lim Limits) CheckNew(start, end, now time.Time) error {
	if err := lim.checkInterval(start, end); err != nil {
		return err
	}
	if !end.After(now) {
		return fmt.Errorf("%w: end %s is not in the future", ErrInvalid, end.Format(time.RFC3339))
	}
	if start.Sub(now) > lim.MaxAdvance {
		return fmt.Errorf("%w: start is more than %s ahead (leases.max_advance)", ErrInvalid, lim.MaxAdvance)
	}
	return nil
}

// CheckExtend validates moving l's end to newEnd at now.
func (lim Limits) CheckExtend(l Lease, newEnd, now time.Time) error {
	if st := l.StateAt(now); st != Scheduled && st != Active {
		return fmt.Errorf("%w: lease %d is %s", ErrIllegalState, l.ID, st)
	}
	if !newEnd.After(l.End) {
		return fmt.Errorf("%w: new end %s is not after the current end %s", ErrInvalid,
			newEnd.Format(time.RFC3339), l.End.Format(time.RFC3339))
	}
	return lim.checkInterval(l.Start, newEnd)
}

func (lim Limits) checkInterval(start, end time.Time) error {
	d := end.Sub(start)
	switch {
	case !end.After(start):
		return fmt.Errorf("%w: end %s is not after start %s", ErrInvalid, end.Format(time.RFC3339), start.Format(time.RFC3339))
	case d < lim.MinDuration:
		return fmt.Errorf("%w: lasts %s, shorter than the minimum %s (leases.min_duration)", ErrInvalid, d, lim.MinDuration)
	case d > lim.MaxDuration:
		return fmt.Errorf("%w: lasts %s, longer than the maximum %s (leases.max_duration)", ErrInvalid, d, lim.MaxDuration)
	}
	return nil
}

// Cancel returns l as it is after being cancelled at now: a lease that has
// not started is withdrawn, an active one ends at now. An ended or
// cancelled lease cannot be cancelled.
func Cancel(l Lease, now time.Time) (Lease, error) {
	switch l.StateAt(now) {
	case Scheduled:
		l.Cancelled = true
	case Active:
		if end := Normalize(now); end.After(l.Start) {
			l.End = end
		} else {
			l.Cancelled = true // cancelled within its first second
		}
	default:
		return l, fmt.Errorf("%w: lease %d is %s", ErrIllegalState, l.ID, l.StateAt(now))
	}
	return l, nil
}
