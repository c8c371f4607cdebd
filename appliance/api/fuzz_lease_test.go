package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/api/wire"
	"github.com/malleable-cloud/malleable/appliance/httpx"
	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/lease"
)

// FuzzLeaseRequest feeds arbitrary bodies to parseLeaseRequest. It must never
// panic, and everything it refuses must be a client error (400). What it
// accepts must be exactly one JSON object, name a valid node and tenant, have
// whole-second UTC times, and mean what the request said: the start given or
// now, and the end given, the start plus the duration, or the start plus the
// default duration.
//
// parseLeaseRequest leaves the order of start and end to the store, which
// refuses a bad order with 422 (see TestAPICreateLease), so an end before the
// start is only an error once the limits have been applied.
func FuzzLeaseRequest(f *testing.F) {
	now := time.Date(2026, 3, 2, 9, 30, 0, 250_000_000, time.UTC)
	lim := lease.DefaultLimits()
	a := New(Config{Limits: lim, Now: func() time.Time { return now }})
	f.Fuzz(func(t *testing.T, body []byte) {
		// As createLease does: the one strict decoder, then the checks.
		var req wire.LeaseRequest
		r := httptest.NewRequest(http.MethodPost, "/api/v1/leases", bytes.NewReader(body))
		err := httpx.DecodeJSON(httptest.NewRecorder(), r, &req, 0)
		var l lease.Lease
		if err == nil {
			l, err = parseLeaseRequest(req, now, lim)
		}
		if err != nil {
			if status := a.rs.Resolve(err).Status; status != http.StatusBadRequest && status != http.StatusRequestEntityTooLarge {
				t.Fatalf("refusal answers %d, want 400 (or 413): %v", status, err)
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted a body that is not one JSON value: %q", body)
		}
		if err := inventory.ValidateName("node", l.Node); err != nil {
			t.Fatalf("accepted node: %v", err)
		}
		if err := inventory.ValidateName("tenant", l.Tenant); err != nil {
			t.Fatalf("accepted tenant: %v", err)
		}
		for _, x := range []time.Time{l.Start, l.End} {
			if x.Location() != time.UTC || x.Nanosecond() != 0 {
				t.Fatalf("time %s is not whole seconds in UTC", x)
			}
		}
		if l.ID != 0 || l.Cancelled || !l.CreatedAt.IsZero() {
			t.Fatalf("parsing set stored fields: %+v", l)
		}

		req = wire.LeaseRequest{}
		if err := json.Unmarshal(body, &req); err != nil {
			t.Fatalf("accepted a body that does not decode: %v", err)
		}
		wantStart := lease.Normalize(now)
		if req.Start != "" {
			wantStart = lease.Normalize(mustParseRFC3339(t, req.Start))
		}
		if !l.Start.Equal(wantStart) {
			t.Fatalf("start %s, want %s for %q", l.Start, wantStart, req.Start)
		}
		switch {
		case req.End != "":
			if want := lease.Normalize(mustParseRFC3339(t, req.End)); !l.End.Equal(want) {
				t.Fatalf("end %s, want %s for %q", l.End, want, req.End)
			}
		case req.Duration != "":
			d, err := time.ParseDuration(req.Duration)
			if err != nil || d <= 0 {
				t.Fatalf("accepted duration %q", req.Duration)
			}
			// Both ends are truncated to the second, so the length is
			// within a second of the duration asked for (d+1s may
			// overflow: compare the difference)...
			if got := l.End.Sub(l.Start); got-d <= -time.Second || got-d >= time.Second {
				t.Fatalf("lasts %s, asked for %s", got, d)
			}
			// ...and a lease of at least a second cannot collapse.
			if d >= time.Second && !l.End.After(l.Start) {
				t.Fatalf("end %s is not after start %s for duration %s", l.End, l.Start, d)
			}
		default:
			if got := l.End.Sub(l.Start); got != lim.DefaultDuration {
				t.Fatalf("lasts %s, want the default %s", got, lim.DefaultDuration)
			}
		}
		if lim.CheckNew(l.Start, l.End, now) == nil && !l.End.After(l.Start) {
			t.Fatalf("limits accept [%s, %s)", l.Start, l.End)
		}
	})
}

func mustParseRFC3339(t *testing.T, s string) time.Time {
	t.Helper()
	x, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatalf("accepted time %q: %v", s, err)
	}
	return x
}
