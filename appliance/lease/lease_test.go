package lease_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/lease"
)

// now is the fixed instant every test is evaluated at.
var now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// checkErr fails t unless err matches: no error when substr is empty,
// otherwise an error wrapping sentinel whose message contains substr.
func checkErr(t *testing.T, err, sentinel error, substr string) {
	t.Helper()
	if substr == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("got no error, want one containing %q", substr)
	}
	if !errors.Is(err, sentinel) {
		t.Errorf("error %q does not wrap %v", err, sentinel)
	}
	if !strings.Contains(err.Error(), substr) {
		t.Errorf("error %q does not contain %q", err, substr)
	}
}

func TestStateAt(t *testing.T) {
	l := lease.Lease{ID: 1, Start: now, End: now.Add(time.Hour)}
	cancelled := l
	cancelled.Cancelled = true

	tests := map[string]struct {
		lease lease.Lease
		at    time.Time
		want  lease.State
	}{
		"long before start":       {l, now.Add(-24 * time.Hour), lease.Scheduled},
		"just before start":       {l, now.Add(-time.Nanosecond), lease.Scheduled},
		"at start":                {l, now, lease.Active},
		"inside":                  {l, now.Add(30 * time.Minute), lease.Active},
		"just before end":         {l, now.Add(time.Hour - time.Nanosecond), lease.Active},
		"at end":                  {l, now.Add(time.Hour), lease.Ended},
		"after end":               {l, now.Add(48 * time.Hour), lease.Ended},
		"cancelled before start":  {cancelled, now.Add(-time.Hour), lease.Cancelled},
		"cancelled while in span": {cancelled, now.Add(time.Minute), lease.Cancelled},
		"cancelled after end":     {cancelled, now.Add(2 * time.Hour), lease.Cancelled},
		// The instant's zone must not matter: 13:00 CET is 12:00 UTC.
		"at start in another zone": {l, now.In(time.FixedZone("CET", 3600)), lease.Active},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := tc.lease.StateAt(tc.at); got != tc.want {
				t.Errorf("StateAt(%s) = %s, want %s", tc.at, got, tc.want)
			}
		})
	}
}

func TestDefaultLimits(t *testing.T) {
	lim := lease.DefaultLimits()
	if !(lim.MinDuration > 0 && lim.MinDuration <= lim.DefaultDuration && lim.DefaultDuration <= lim.MaxDuration) {
		t.Errorf("DefaultLimits() = %+v: want 0 < min <= default <= max", lim)
	}
	// The default duration must itself pass the limits.
	if err := lim.CheckNew(now, now.Add(lim.DefaultDuration), now); err != nil {
		t.Errorf("a lease of the default duration is refused: %v", err)
	}
}

func TestLimitsCheckNew(t *testing.T) {
	lim := lease.DefaultLimits()
	tests := map[string]struct {
		start, end time.Time
		wantErr    string // substring; empty for success
	}{
		"a week from now":            {now, now.Add(7 * 24 * time.Hour), ""},
		"starts tomorrow":            {now.Add(24 * time.Hour), now.Add(48 * time.Hour), ""},
		"started earlier, ends soon": {now.Add(-time.Hour), now.Add(time.Second), ""},
		"exactly the minimum":        {now, now.Add(time.Minute), ""},
		"exactly the maximum":        {now, now.Add(21 * 24 * time.Hour), ""},
		"starts at the max advance":  {now.Add(365 * 24 * time.Hour), now.Add(366 * 24 * time.Hour), ""},

		"end equals start":            {now.Add(time.Hour), now.Add(time.Hour), "is not after start"},
		"end before start":            {now.Add(2 * time.Hour), now.Add(time.Hour), "is not after start"},
		"shorter than the minimum":    {now, now.Add(59 * time.Second), "shorter than the minimum 1m0s (leases.min_duration)"},
		"longer than the maximum":     {now, now.Add(21*24*time.Hour + time.Second), "longer than the maximum 504h0m0s (leases.max_duration)"},
		"ends exactly now":            {now.Add(-time.Hour), now, "end 2026-11-25T12:00:00Z is not in the future"},
		"entirely in the past":        {now.Add(-3 * time.Hour), now.Add(-2 * time.Hour), "is not in the future"},
		"starts past the advance":     {now.Add(365*24*time.Hour + time.Second), now.Add(366 * 24 * time.Hour), "more than 8760h0m0s ahead (leases.max_advance)"},
		"interval checked before now": {now.Add(-2 * time.Hour), now.Add(-3 * time.Hour), "is not after start"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			checkErr(t, lim.CheckNew(tc.start, tc.end, now), lease.ErrInvalid, tc.wantErr)
		})
	}
}

func TestLimitsCheckExtend(t *testing.T) {
	lim := lease.DefaultLimits()
	active := lease.Lease{ID: 7, Start: now.Add(-time.Hour), End: now.Add(time.Hour)}
	scheduled := lease.Lease{ID: 8, Start: now.Add(time.Hour), End: now.Add(2 * time.Hour)}
	ended := lease.Lease{ID: 9, Start: now.Add(-2 * time.Hour), End: now}
	cancelled := scheduled
	cancelled.Cancelled = true

	tests := map[string]struct {
		lease    lease.Lease
		newEnd   time.Time
		sentinel error
		wantErr  string
	}{
		"active by a day":          {active, now.Add(25 * time.Hour), nil, ""},
		"scheduled by a minute":    {scheduled, scheduled.End.Add(time.Minute), nil, ""},
		"up to the maximum":        {active, active.Start.Add(21 * 24 * time.Hour), nil, ""},
		"by a second":              {active, active.End.Add(time.Second), nil, ""},
		"past the maximum":         {active, active.Start.Add(21*24*time.Hour + time.Second), lease.ErrInvalid, "longer than the maximum"},
		"to the same end":          {active, active.End, lease.ErrInvalid, "is not after the current end 2026-11-25T13:00:00Z"},
		"to an earlier end":        {active, now.Add(30 * time.Minute), lease.ErrInvalid, "is not after the current end"},
		"an ended lease":           {ended, now.Add(time.Hour), lease.ErrIllegalState, "lease 9 is ended"},
		"a cancelled lease":        {cancelled, now.Add(3 * time.Hour), lease.ErrIllegalState, "lease 8 is cancelled"},
		"state is checked first":   {ended, ended.End.Add(-time.Hour), lease.ErrIllegalState, "is ended"},
		"ended, even by max limit": {ended, ended.Start.Add(22 * 24 * time.Hour), lease.ErrIllegalState, "is ended"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			checkErr(t, lim.CheckExtend(tc.lease, tc.newEnd, now), tc.sentinel, tc.wantErr)
		})
	}
}

func TestCancel(t *testing.T) {
	start := now.Add(-time.Hour)
	end := now.Add(time.Hour)
	base := lease.Lease{ID: 3, Node: "n1", Tenant: "t1", Start: start, End: end}
	cancelledLease := base
	cancelledLease.Cancelled = true

	tests := map[string]struct {
		lease         lease.Lease
		at            time.Time
		wantEnd       time.Time
		wantCancelled bool
		wantErr       string // ErrIllegalState substring
	}{
		"scheduled is withdrawn": {base, start.Add(-time.Minute), end, true, ""},
		"active ends at now":     {base, now, now, false, ""},
		"active ends at the whole second before now": {
			base, now.Add(1500 * time.Millisecond), now.Add(time.Second), false, ""},
		"active, converted to UTC": {
			base, now.In(time.FixedZone("EST", -5*3600)), now, false, ""},
		"active at its start is withdrawn": {base, start, end, true, ""},
		"active in its first second is withdrawn": {
			base, start.Add(999 * time.Millisecond), end, true, ""},
		"active one second in ends after a second": {
			base, start.Add(time.Second), start.Add(time.Second), false, ""},
		"ended":              {base, end, end, false, "lease 3 is ended"},
		"long ended":         {base, end.Add(24 * time.Hour), end, false, "lease 3 is ended"},
		"already cancelled":  {cancelledLease, start.Add(-time.Minute), end, true, "lease 3 is cancelled"},
		"cancelled, in span": {cancelledLease, now, end, true, "lease 3 is cancelled"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := lease.Cancel(tc.lease, tc.at)
			checkErr(t, err, lease.ErrIllegalState, tc.wantErr)
			if !got.End.Equal(tc.wantEnd) || got.Cancelled != tc.wantCancelled {
				t.Errorf("Cancel() = end %s cancelled %v, want end %s cancelled %v",
					got.End, got.Cancelled, tc.wantEnd, tc.wantCancelled)
			}
			if got.ID != tc.lease.ID || !got.Start.Equal(tc.lease.Start) || got.Node != tc.lease.Node || got.Tenant != tc.lease.Tenant {
				t.Errorf("Cancel() changed more than end and cancelled: %+v from %+v", got, tc.lease)
			}
			if tc.wantErr != "" {
				return
			}
			// However it was cancelled, the lease is no longer live.
			if st := got.StateAt(tc.at); st != lease.Ended && st != lease.Cancelled {
				t.Errorf("after Cancel, StateAt(now) = %s, want ended or cancelled", st)
			}
		})
	}
}

func TestParseState(t *testing.T) {
	tests := map[string]struct {
		in      string
		want    lease.State
		wantErr string
	}{
		"scheduled":  {"scheduled", lease.Scheduled, ""},
		"active":     {"active", lease.Active, ""},
		"ended":      {"ended", lease.Ended, ""},
		"cancelled":  {"cancelled", lease.Cancelled, ""},
		"empty":      {"", "", `unknown lease state ""`},
		"upper case": {"Active", "", `unknown lease state "Active"`},
		"american":   {"canceled", "", `unknown lease state "canceled"`},
		"padded":     {" active", "", "want scheduled, active, ended or cancelled"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := lease.ParseState(tc.in)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseState(%q): %v", tc.in, err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ParseState(%q) error = %v, want one containing %q", tc.in, err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("ParseState(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestConflictError(t *testing.T) {
	existing := lease.Lease{ID: 42, Node: "n1", Tenant: "acme", Start: now, End: now.Add(2 * time.Hour)}
	err := fmt.Errorf("create lease of n1 for other: %w", &lease.ConflictError{Existing: existing})

	var ce *lease.ConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("errors.As(%v, *ConflictError) = false", err)
	}
	if ce.Existing != existing {
		t.Errorf("Existing = %+v, want %+v", ce.Existing, existing)
	}
	if !errors.Is(err, lease.ErrConflict) {
		t.Errorf("errors.Is(%v, ErrConflict) = false", err)
	}
	for _, other := range []error{lease.ErrInvalid, lease.ErrIllegalState} {
		if errors.Is(err, other) {
			t.Errorf("errors.Is(%v, %v) = true", err, other)
		}
	}
	want := "node n1 is already leased to acme from 2026-11-25T12:00:00Z to 2026-11-25T14:00:00Z (lease 42)"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}
}

func TestNormalize(t *testing.T) {
	in := time.Date(2026, 11, 25, 13, 0, 5, 999_999_999, time.FixedZone("CET", 3600))
	got := lease.Normalize(in)
	want := time.Date(2026, 11, 25, 12, 0, 5, 0, time.UTC)
	if !got.Equal(want) || got.Location() != time.UTC {
		t.Errorf("Normalize(%s) = %s, want %s", in, got, want)
	}
}
