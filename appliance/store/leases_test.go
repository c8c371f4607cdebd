package store_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/lease"
	"github.com/malleable-cloud/malleable/appliance/store"
)

// span is a lease to set up: node and tenant over [start, end), requested
// at at (now when zero), cancelled at now when cancel is set.
type span struct {
	node, tenant string
	start, end   time.Time
	at           time.Time
	cancel       bool
}

// seed records spans in order and returns the resulting leases.
func seed(t testing.TB, s *store.Store, spans ...span) []lease.Lease {
	t.Helper()
	var out []lease.Lease
	for _, sp := range spans {
		at := sp.at
		if at.IsZero() {
			at = now
		}
		l := mustLease(t, s, sp.node, sp.tenant, sp.start, sp.end, at)
		if sp.cancel {
			var err error
			if l, err = s.CancelLease(context.Background(), l.ID, now); err != nil {
				t.Fatalf("CancelLease(%d): %v", l.ID, err)
			}
		}
		out = append(out, l)
	}
	return out
}

// inventoryStore returns a store with tenants t1, t2 and nodes n1, n2.
func inventoryStore(t testing.TB) (*store.Store, string) {
	t.Helper()
	s, path := newStore(t)
	mustTenant(t, s, "t1")
	mustTenant(t, s, "t2")
	mustNode(t, s, "n1", "aa:bb:cc:00:00:01")
	mustNode(t, s, "n2", "aa:bb:cc:00:00:02")
	return s, path
}

func allLeases(t testing.TB, s *store.Store) []lease.Lease {
	t.Helper()
	ls, err := s.ListLeases(context.Background(), store.LeaseFilter{})
	if err != nil {
		t.Fatalf("ListLeases: %v", err)
	}
	return ls
}

func TestCreateLease(t *testing.T) {
	ctx := context.Background()
	// On n1: t1 holds [1h, 3h) and [5h, 6h); [3h, 5h) was t2's, cancelled.
	setup := []span{
		{node: "n1", tenant: "t1", start: hours(1), end: hours(3)},
		{node: "n1", tenant: "t2", start: hours(3), end: hours(5), cancel: true},
		{node: "n1", tenant: "t1", start: hours(5), end: hours(6)},
	}
	const first, second = 0, 2 // the live leases in setup

	tests := map[string]struct {
		node, tenant string
		start, end   time.Time
		conflictWith int // index into setup when a conflict is expected, else -1
		sentinels    []error
		wantErr      string
	}{
		"free, before the others":  {"n1", "t2", hours(-1), hours(0.5), -1, nil, ""},
		"touching the first start": {"n1", "t2", now, hours(1), -1, nil, ""},
		"touching the first end":   {"n1", "t2", hours(3), hours(4), -1, nil, ""},
		"exactly the gap":          {"n1", "t2", hours(3), hours(5), -1, nil, ""},
		"after the others":         {"n1", "t1", hours(6), hours(30), -1, nil, ""},
		"same time, other node":    {"n2", "t2", hours(1), hours(3), -1, nil, ""},
		"same tenant, other node":  {"n2", "t1", hours(0), hours(6), -1, nil, ""},
		// Times are truncated to the second before the limits apply.
		"a minute once truncated": {"n2", "t1", now.Add(500 * time.Millisecond), now.Add(60*time.Second + 200*time.Millisecond), -1, nil, ""},

		"same interval":             {"n1", "t2", hours(1), hours(3), first, nil, ""},
		"overlapping its start":     {"n1", "t2", hours(0.5), hours(1.5), first, nil, ""},
		"overlapping its end":       {"n1", "t2", hours(2.5), hours(3.5), first, nil, ""},
		"inside it":                 {"n1", "t2", hours(1.5), hours(2), first, nil, ""},
		"by one second":             {"n1", "t2", hours(3).Add(-time.Second), hours(4), first, nil, ""},
		"same tenant again":         {"n1", "t1", hours(2), hours(4), first, nil, ""},
		"spanning both names first": {"n1", "t2", hours(0), hours(10), first, nil, ""},
		"over the gap into second":  {"n1", "t2", hours(4), hours(5.5), second, nil, ""},

		"unknown node":            {"ghost", "t1", hours(10), hours(11), -1, []error{store.ErrUnknownRef, store.ErrNotFound}, `node "ghost": unknown reference: not found`},
		"unknown tenant":          {"n2", "ghost", hours(10), hours(11), -1, []error{store.ErrUnknownRef, store.ErrNotFound}, `tenant "ghost": unknown reference`},
		"end before start":        {"n2", "t1", hours(11), hours(10), -1, []error{lease.ErrInvalid}, "is not after start"},
		"entirely in the past":    {"n2", "t1", hours(-3), hours(-2), -1, []error{lease.ErrInvalid}, "is not in the future"},
		"too long":                {"n2", "t1", now, now.Add(22 * 24 * time.Hour), -1, []error{lease.ErrInvalid}, "leases.max_duration"},
		"too short":               {"n2", "t1", now, now.Add(59*time.Second + 900*time.Millisecond), -1, []error{lease.ErrInvalid}, "shorter than the minimum 1m0s"},
		"limits before conflicts": {"n1", "t2", hours(2), hours(1), -1, []error{lease.ErrInvalid}, "is not after start"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s, _ := inventoryStore(t)
			existing := seed(t, s, setup...)
			before := allLeases(t, s)

			got, err := s.CreateLease(ctx, lease.Lease{Node: tc.node, Tenant: tc.tenant, Start: tc.start, End: tc.end},
				lease.DefaultLimits(), now)

			switch {
			case tc.conflictWith >= 0:
				var ce *lease.ConflictError
				if !errors.As(err, &ce) {
					t.Fatalf("CreateLease error = %v, want a *lease.ConflictError", err)
				}
				if !errors.Is(err, lease.ErrConflict) {
					t.Errorf("error %v does not wrap lease.ErrConflict", err)
				}
				if want := existing[tc.conflictWith]; !reflect.DeepEqual(ce.Existing, want) {
					t.Errorf("conflict names %+v, want %+v", ce.Existing, want)
				}
			case tc.wantErr != "":
				checkErr(t, err, tc.wantErr, tc.sentinels...)
				if errors.Is(err, lease.ErrConflict) {
					t.Errorf("error %v wraps ErrConflict", err)
				}
			default:
				if err != nil {
					t.Fatalf("CreateLease: %v", err)
				}
				want := lease.Lease{ID: got.ID, Node: tc.node, Tenant: tc.tenant,
					Start: lease.Normalize(tc.start), End: lease.Normalize(tc.end), CreatedAt: now}
				if got.ID <= existing[len(existing)-1].ID || !reflect.DeepEqual(got, want) {
					t.Errorf("CreateLease() = %+v, want %+v with a new ID", got, want)
				}
				stored, err := s.GetLease(ctx, got.ID)
				if err != nil || !reflect.DeepEqual(stored, got) {
					t.Errorf("GetLease(%d) = %+v, %v; want %+v", got.ID, stored, err, got)
				}
				if n := len(allLeases(t, s)); n != len(before)+1 {
					t.Errorf("%d leases after a create, want %d", n, len(before)+1)
				}
				return
			}
			if after := allLeases(t, s); !reflect.DeepEqual(after, before) {
				t.Errorf("a refused create changed the leases:\n%+v\nwant\n%+v", after, before)
			}
		})
	}
}

func TestCreateLeaseNormalizes(t *testing.T) {
	ctx := context.Background()
	s, _ := inventoryStore(t)
	cet := time.FixedZone("CET", 3600)
	in := lease.Lease{
		ID: 99, Node: "n1", Tenant: "t1", Cancelled: true, // ignored
		Start: time.Date(2026, 11, 25, 14, 0, 0, 999_000_000, cet),
		End:   time.Date(2026, 11, 25, 15, 30, 0, 500_000_000, cet),
	}
	got, err := s.CreateLease(ctx, in, lease.DefaultLimits(), now.Add(250*time.Microsecond))
	if err != nil {
		t.Fatal(err)
	}
	want := lease.Lease{ID: got.ID, Node: "n1", Tenant: "t1", Start: hours(1), End: hours(2.5), CreatedAt: now}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("CreateLease() = %+v, want %+v", got, want)
	}
	if stored, err := s.GetLease(ctx, got.ID); err != nil || !reflect.DeepEqual(stored, want) {
		t.Errorf("GetLease() = %+v, %v; want %+v", stored, err, want)
	}
}

func TestExtendLease(t *testing.T) {
	ctx := context.Background()
	setup := []span{
		{node: "n1", tenant: "t1", start: hours(-1), end: hours(1)},                   // 0 active
		{node: "n1", tenant: "t2", start: hours(1), end: hours(2), cancel: true},      // 1 cancelled
		{node: "n1", tenant: "t2", start: hours(2), end: hours(4)},                    // 2 scheduled
		{node: "n1", tenant: "t1", start: hours(-5), end: hours(-3), at: hours(-6)},   // 3 ended
		{node: "n2", tenant: "t2", start: hours(1), end: hours(3)},                    // 4 other node
		{node: "n1", tenant: "t1", start: hours(-10), end: hours(-8), at: hours(-11)}, // 5 ended, earlier
	}
	tests := map[string]struct {
		lease        int // index into setup
		end          time.Time
		conflictWith int // index into setup, or -1
		sentinel     error
		wantErr      string
	}{
		"active, over a cancelled lease up to the next": {0, hours(2), -1, nil, ""},
		"active, a little":            {0, hours(1.5), -1, nil, ""},
		"scheduled, far":              {2, hours(300), -1, nil, ""},
		"other node is independent":   {4, hours(100), -1, nil, ""},
		"sub-second end is truncated": {0, hours(1.5).Add(999 * time.Millisecond), -1, nil, ""},

		"active, into the next lease": {0, hours(2).Add(time.Second), 2, nil, ""},
		"active, past the next lease": {0, hours(10), 2, nil, ""},
		"past the maximum":            {2, hours(2).Add(21*24*time.Hour + time.Second), -1, lease.ErrInvalid, "leases.max_duration"},
		"not later":                   {0, hours(1), -1, lease.ErrInvalid, "is not after the current end"},
		"earlier":                     {2, hours(3), -1, lease.ErrInvalid, "is not after the current end"},
		"ended":                       {3, hours(1), -1, lease.ErrIllegalState, "is ended"},
		"ended, into nothing":         {5, hours(-4), -1, lease.ErrIllegalState, "is ended"},
		"cancelled":                   {1, hours(1.5), -1, lease.ErrIllegalState, "is cancelled"},
		"unknown lease":               {-1, hours(5), -1, store.ErrNotFound, "not found"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s, _ := inventoryStore(t)
			existing := seed(t, s, setup...)
			before := allLeases(t, s)
			id := existing[len(existing)-1].ID + 1
			if tc.lease >= 0 {
				id = existing[tc.lease].ID
			}

			got, err := s.ExtendLeaseFunc(ctx, id, func(time.Time) time.Time { return tc.end }, lease.DefaultLimits(), now)

			switch {
			case tc.conflictWith >= 0:
				var ce *lease.ConflictError
				if !errors.As(err, &ce) || !errors.Is(err, lease.ErrConflict) {
					t.Fatalf("ExtendLease error = %v, want a *lease.ConflictError", err)
				}
				if want := existing[tc.conflictWith]; !reflect.DeepEqual(ce.Existing, want) {
					t.Errorf("conflict names %+v, want %+v", ce.Existing, want)
				}
			case tc.wantErr != "":
				checkErr(t, err, tc.wantErr, tc.sentinel)
			default:
				if err != nil {
					t.Fatalf("ExtendLease: %v", err)
				}
				want := existing[tc.lease]
				want.End = lease.Normalize(tc.end)
				if !reflect.DeepEqual(got, want) {
					t.Errorf("ExtendLease() = %+v, want %+v", got, want)
				}
				if stored, err := s.GetLease(ctx, id); err != nil || !reflect.DeepEqual(stored, want) {
					t.Errorf("GetLease() = %+v, %v; want %+v", stored, err, want)
				}
				return
			}
			if after := allLeases(t, s); !reflect.DeepEqual(after, before) {
				t.Errorf("a refused extend changed the leases:\n%+v\nwant\n%+v", after, before)
			}
		})
	}
}

func TestCancelLease(t *testing.T) {
	ctx := context.Background()
	setup := []span{
		{node: "n1", tenant: "t1", start: hours(-1), end: hours(1)},                 // 0 active
		{node: "n1", tenant: "t2", start: hours(2), end: hours(4)},                  // 1 scheduled
		{node: "n1", tenant: "t1", start: hours(-5), end: hours(-3), at: hours(-6)}, // 2 ended
		{node: "n2", tenant: "t2", start: hours(5), end: hours(6), cancel: true},    // 3 cancelled
		{node: "n2", tenant: "t1", start: now, end: hours(1)},                       // 4 starts now
	}
	tests := map[string]struct {
		lease         int // index into setup, or -1 for a missing one
		at            time.Time
		wantEnd       time.Time
		wantCancelled bool
		sentinel      error
		wantErr       string
	}{
		"active ends now":                      {0, now, now, false, nil, ""},
		"active ends at the second":            {0, now.Add(2500 * time.Millisecond), now.Add(2 * time.Second), false, nil, ""},
		"scheduled is withdrawn":               {1, now, hours(4), true, nil, ""},
		"active in its first second withdrawn": {4, now.Add(800 * time.Millisecond), hours(1), true, nil, ""},
		"ended":                                {2, now, hours(-3), false, lease.ErrIllegalState, "is ended"},
		"active, once over":                    {0, hours(1), hours(1), false, lease.ErrIllegalState, "is ended"},
		"already cancelled":                    {3, now, hours(6), true, lease.ErrIllegalState, "is cancelled"},
		"missing":                              {-1, now, time.Time{}, false, store.ErrNotFound, "not found"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s, _ := inventoryStore(t)
			existing := seed(t, s, setup...)
			before := allLeases(t, s)
			id := existing[len(existing)-1].ID + 1
			if tc.lease >= 0 {
				id = existing[tc.lease].ID
			}

			got, err := s.CancelLease(ctx, id, tc.at)
			checkErr(t, err, tc.wantErr, tc.sentinel)
			if tc.wantErr != "" {
				if after := allLeases(t, s); !reflect.DeepEqual(after, before) {
					t.Errorf("a refused cancel changed the leases:\n%+v\nwant\n%+v", after, before)
				}
				return
			}
			want := existing[tc.lease]
			want.End, want.Cancelled = tc.wantEnd, tc.wantCancelled
			if !reflect.DeepEqual(got, want) {
				t.Errorf("CancelLease() = %+v, want %+v", got, want)
			}
			if stored, err := s.GetLease(ctx, id); err != nil || !reflect.DeepEqual(stored, want) {
				t.Errorf("GetLease() = %+v, %v; want %+v", stored, err, want)
			}
			// The freed time can be leased again.
			freed := existing[tc.lease]
			if !got.Cancelled {
				freed.Start = got.End
			}
			mustLease(t, s, freed.Node, "t2", freed.Start, freed.End, tc.at)
		})
	}
}

// listFixture is a store holding the leases TestListLeases selects from,
// recorded out of start order; labels[i] names leases[i].
func listFixture(t *testing.T) (s *store.Store, labels []string, leases []lease.Lease) {
	t.Helper()
	s, _ = inventoryStore(t)
	fixture := []struct {
		label string
		span  span
	}{
		{"L3", span{node: "n1", tenant: "t1", start: hours(2), end: hours(4)}},                    // scheduled
		{"L7", span{node: "n2", tenant: "t1", start: hours(2), end: hours(3)}},                    // scheduled, same start as L3
		{"L6", span{node: "n2", tenant: "t2", start: hours(6), end: hours(7)}},                    // scheduled
		{"L5", span{node: "n2", tenant: "t2", start: hours(5), end: hours(6), cancel: true}},      // cancelled
		{"L1", span{node: "n1", tenant: "t1", start: hours(-10), end: hours(-8), at: hours(-11)}}, // ended
		{"L2", span{node: "n1", tenant: "t2", start: hours(-1), end: hours(1)}},                   // active
		{"L4", span{node: "n2", tenant: "t1", start: hours(-2), end: hours(2)}},                   // active
	}
	for _, f := range fixture {
		labels = append(labels, f.label)
		leases = append(leases, seed(t, s, f.span)...)
	}
	return s, labels, leases
}

func TestListLeases(t *testing.T) {
	ctx := context.Background()
	s, labels, leases := listFixture(t)
	label := map[int64]string{}
	for i, l := range leases {
		label[l.ID] = labels[i]
	}

	tests := map[string]struct {
		filter  store.LeaseFilter
		want    []string
		wantErr string
	}{
		"everything, by start then ID": {store.LeaseFilter{}, []string{"L1", "L4", "L2", "L3", "L7", "L5", "L6"}, ""},
		"node":                         {store.LeaseFilter{Node: "n1"}, []string{"L1", "L2", "L3"}, ""},
		"other node":                   {store.LeaseFilter{Node: "n2"}, []string{"L4", "L7", "L5", "L6"}, ""},
		"tenant":                       {store.LeaseFilter{Tenant: "t2"}, []string{"L2", "L5", "L6"}, ""},
		"node and tenant":              {store.LeaseFilter{Node: "n2", Tenant: "t1"}, []string{"L4", "L7"}, ""},
		"unknown node":                 {store.LeaseFilter{Node: "ghost"}, []string{}, ""},
		"unknown tenant":               {store.LeaseFilter{Tenant: "ghost"}, []string{}, ""},
		"window":                       {store.LeaseFilter{From: now, To: hours(3)}, []string{"L4", "L2", "L3", "L7"}, ""},
		"window between touching ones": {store.LeaseFilter{From: hours(4), To: hours(5)}, []string{}, ""},
		"from only":                    {store.LeaseFilter{From: hours(1)}, []string{"L4", "L3", "L7", "L5", "L6"}, ""},
		"to only":                      {store.LeaseFilter{To: hours(-1)}, []string{"L1", "L4"}, ""},
		"after everything":             {store.LeaseFilter{From: hours(100)}, []string{}, ""},
		"active":                       {store.LeaseFilter{State: lease.Active, Now: now}, []string{"L4", "L2"}, ""},
		"scheduled":                    {store.LeaseFilter{State: lease.Scheduled, Now: now}, []string{"L3", "L7", "L6"}, ""},
		"ended":                        {store.LeaseFilter{State: lease.Ended, Now: now}, []string{"L1"}, ""},
		"cancelled":                    {store.LeaseFilter{State: lease.Cancelled, Now: now}, []string{"L5"}, ""},
		"active later":                 {store.LeaseFilter{State: lease.Active, Now: hours(2)}, []string{"L3", "L7"}, ""},
		"ended later":                  {store.LeaseFilter{State: lease.Ended, Now: hours(2)}, []string{"L1", "L4", "L2"}, ""},
		"scheduled later":              {store.LeaseFilter{State: lease.Scheduled, Now: hours(2)}, []string{"L6"}, ""},
		"node and state":               {store.LeaseFilter{Node: "n1", State: lease.Scheduled, Now: now}, []string{"L3"}, ""},
		"limit":                        {store.LeaseFilter{Limit: 2}, []string{"L1", "L4"}, ""},
		"limit after filters":          {store.LeaseFilter{Node: "n2", Limit: 2}, []string{"L4", "L7"}, ""},
		"limit above the count":        {store.LeaseFilter{Tenant: "t2", Limit: 50}, []string{"L2", "L5", "L6"}, ""},
		"unknown state":                {store.LeaseFilter{State: "expired", Now: now}, nil, `unknown state "expired"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := s.ListLeases(ctx, tc.filter)
			checkErr(t, err, tc.wantErr)
			if tc.wantErr != "" {
				return
			}
			names := []string{}
			for _, l := range got {
				names = append(names, label[l.ID])
			}
			if !reflect.DeepEqual(names, tc.want) {
				t.Errorf("ListLeases(%+v) = %v, want %v", tc.filter, names, tc.want)
			}
		})
	}
}

// TestListLeasesStateMatchesDomain checks that the store's SQL for each
// state agrees with lease.StateAt at and around every boundary, down to
// sub-millisecond instants.
func TestListLeasesStateMatchesDomain(t *testing.T) {
	ctx := context.Background()
	s, _, _ := listFixture(t)
	all := allLeases(t, s)
	var instants []time.Time
	for _, l := range all {
		for _, b := range []time.Time{l.Start, l.End} {
			for _, d := range []time.Duration{-time.Millisecond, -500 * time.Microsecond, -time.Nanosecond, 0, time.Nanosecond, 500 * time.Microsecond, time.Millisecond} {
				instants = append(instants, b.Add(d))
			}
		}
	}
	for _, at := range instants {
		for _, st := range []lease.State{lease.Scheduled, lease.Active, lease.Ended, lease.Cancelled} {
			got, err := s.ListLeases(ctx, store.LeaseFilter{State: st, Now: at})
			if err != nil {
				t.Fatal(err)
			}
			want := []lease.Lease{}
			for _, l := range all {
				if l.StateAt(at) == st {
					want = append(want, l)
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("ListLeases(%s at %s) = %v, want %v (StateAt)", st, at.Format(time.RFC3339Nano), ids(got), ids(want))
			}
		}
	}
}

func ids(ls []lease.Lease) []int64 {
	out := []int64{}
	for _, l := range ls {
		out = append(out, l.ID)
	}
	return out
}

func TestDeleteLeased(t *testing.T) {
	ctx := context.Background()
	del := map[string]func(s *store.Store, ctx context.Context, name string, at time.Time) error{
		"tenant": (*store.Store).DeleteTenant,
		"node":   (*store.Store).DeleteNode,
	}
	get := map[string]func(s *store.Store, name string) error{
		"tenant": func(s *store.Store, name string) error { _, err := s.GetTenant(ctx, name); return err },
		"node":   func(s *store.Store, name string) error { _, err := s.GetNode(ctx, name); return err },
	}
	// Every lease below is n1's, for t1; t2 holds a live lease of n2 that
	// must neither block nor be touched.
	tests := map[string]struct {
		spans    []span
		name     string
		sentinel error
		wantErr  string
	}{
		"no leases": {nil, "", nil, ""},
		"only ended": {[]span{
			{start: hours(-10), end: hours(-8), at: hours(-11)},
			{start: hours(-5), end: hours(-3), at: hours(-6)},
		}, "", nil, ""},
		"ended exactly now": {[]span{{start: hours(-1), end: now, at: hours(-2)}}, "", nil, ""},
		"only cancelled":    {[]span{{start: hours(1), end: hours(2), cancel: true}}, "", nil, ""},
		"cancelled while active": {[]span{
			{start: hours(-1), end: hours(2), cancel: true},
		}, "", nil, ""},
		"scheduled": {[]span{{start: hours(1), end: hours(2)}}, "", store.ErrInUse, "NAME has 1 scheduled or active lease(s); cancel them first"},
		"active":    {[]span{{start: hours(-1), end: hours(1)}}, "", store.ErrInUse, "NAME has 1 scheduled or active lease(s)"},
		"ended and two live": {[]span{
			{start: hours(-5), end: hours(-3), at: hours(-6)},
			{start: hours(-1), end: hours(1)},
			{start: hours(1), end: hours(2)},
		}, "", store.ErrInUse, "NAME has 2 scheduled or active lease(s)"},
		"missing": {nil, "ghost", store.ErrNotFound, "NAME: not found"},
	}
	for kind, remove := range del {
		for name, tc := range tests {
			t.Run(kind+"/"+name, func(t *testing.T) {
				s, _ := inventoryStore(t)
				other := seed(t, s, span{node: "n2", tenant: "t2", start: hours(-1), end: hours(5)})
				for _, sp := range tc.spans {
					sp.node, sp.tenant = "n1", "t1"
					seed(t, s, sp)
				}
				target := map[string]string{"tenant": "t1", "node": "n1"}[kind]
				if tc.name != "" {
					target = tc.name
				}
				before := allLeases(t, s)

				err := remove(s, ctx, target, now)
				checkErr(t, err, strings.ReplaceAll(tc.wantErr, "NAME", fmt.Sprintf("%s %q", kind, target)), tc.sentinel)
				if tc.wantErr != "" {
					if after := allLeases(t, s); !reflect.DeepEqual(after, before) {
						t.Errorf("a refused delete changed the leases:\n%+v\nwant\n%+v", after, before)
					}
					if tc.name == "" {
						if err := get[kind](s, target); err != nil {
							t.Errorf("refused delete, but get %s: %v", target, err)
						}
					}
					return
				}
				checkErr(t, get[kind](s, target), "not found", store.ErrNotFound)
				// Its leases went with it; the other tenant's did not.
				if after := allLeases(t, s); !reflect.DeepEqual(after, other) {
					t.Errorf("after delete, leases = %+v, want only %+v", after, other)
				}
				if kind == "node" {
					mustNode(t, s, "n3", "aa:bb:cc:00:00:01") // its MAC is free again
				}
				mustLease(t, s, "n2", "t2", hours(6), hours(7), now)
			})
		}
	}
}

// TestCreateLeaseConcurrent races overlapping requests for one node: the
// overlap check and the insert share a write transaction, so exactly one
// wins and every other request is told which lease it lost to. A lost race
// shows only on some interleavings, so each case runs several rounds, each
// in its own window of time.
func TestCreateLeaseConcurrent(t *testing.T) {
	const n, rounds = 50, 5
	tests := map[string]struct {
		node   func(i int) string
		tenant func(i int) string
		wantOK int // per round
	}{
		"one tenant":      {func(int) string { return "n1" }, func(int) string { return "t1" }, 1},
		"many tenants":    {func(int) string { return "n1" }, func(i int) string { return fmt.Sprintf("t%d", i) }, 1},
		"a node for each": {func(i int) string { return fmt.Sprintf("n%d", i) }, func(i int) string { return fmt.Sprintf("t%d", i) }, n},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s, _ := newStore(t)
			for i := range n {
				mustTenant(t, s, fmt.Sprintf("t%d", i))
				mustNode(t, s, fmt.Sprintf("n%d", i))
			}
			for round := range rounds {
				// Every request of a round overlaps every other: they
				// start a minute apart and last two hours.
				base := hours(1 + 10*float64(round))
				reqs := make([]lease.Lease, n)
				for i := range reqs {
					from := base.Add(time.Duration(i) * time.Minute)
					reqs[i] = lease.Lease{Node: tc.node(i), Tenant: tc.tenant(i), Start: from, End: from.Add(2 * time.Hour)}
				}
				won, conflicts := race(t, s, reqs)
				if len(won) != tc.wantOK || len(conflicts) != n-tc.wantOK {
					t.Fatalf("round %d: %d succeeded and %d conflicted, want %d and %d",
						round, len(won), len(conflicts), tc.wantOK, n-tc.wantOK)
				}
				stored, err := s.ListLeases(ctx, store.LeaseFilter{From: base, To: base.Add(4 * time.Hour)})
				if err != nil {
					t.Fatal(err)
				}
				slices.SortFunc(won, func(a, b lease.Lease) int { return a.Start.Compare(b.Start) })
				if !reflect.DeepEqual(stored, won) {
					t.Fatalf("round %d: stored leases %+v, want the winners %+v", round, stored, won)
				}
				for _, ce := range conflicts {
					if !reflect.DeepEqual(ce.Existing, won[0]) {
						t.Errorf("round %d: a loser was told of %+v, want the winner %+v", round, ce.Existing, won[0])
					}
				}
			}
			if got := len(allLeases(t, s)); got != rounds*tc.wantOK {
				t.Errorf("the table holds %d leases, want %d", got, rounds*tc.wantOK)
			}
		})
	}
}

// race sends every request at once and sorts the outcomes into leases
// created and conflicts; any other error fails t.
func race(t *testing.T, s *store.Store, reqs []lease.Lease) ([]lease.Lease, []*lease.ConflictError) {
	t.Helper()
	type result struct {
		lease lease.Lease
		err   error
	}
	results := make([]result, len(reqs))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, req := range reqs {
		wg.Go(func() {
			<-start
			l, err := s.CreateLease(context.Background(), req, lease.DefaultLimits(), now)
			results[i] = result{l, err}
		})
	}
	close(start)
	wg.Wait()

	var won []lease.Lease
	var conflicts []*lease.ConflictError
	for i, r := range results {
		var ce *lease.ConflictError
		switch {
		case r.err == nil:
			won = append(won, r.lease)
		case errors.As(r.err, &ce) && errors.Is(r.err, lease.ErrConflict):
			conflicts = append(conflicts, ce)
		default:
			t.Errorf("request %d: %v, want success or a *lease.ConflictError", i, r.err)
		}
	}
	return won, conflicts
}
