package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"github.com/malleable-cloud/malleable/appliance/api/wire"
	"github.com/malleable-cloud/malleable/appliance/httpx"
	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/lease"
	"github.com/malleable-cloud/malleable/appliance/store"
)

func (a *API) view(l lease.Lease) wire.Lease { return wire.Lease{Lease: l, State: l.StateAt(a.now())} }

// parseLeaseRequest checks the fields of a lease request at now. It does
// not apply limits: the store does, atomically.
func parseLeaseRequest(req wire.LeaseRequest, now time.Time, lim lease.Limits) (lease.Lease, error) {
	l := lease.Lease{Node: req.Node, Tenant: req.Tenant, Start: now}
	errs := []error{inventory.ValidateName("node", req.Node), inventory.ValidateName("tenant", req.Tenant)}
	if req.Start != "" {
		t, err := parseTime("start", req.Start)
		errs = append(errs, err)
		l.Start = t
	}
	switch {
	case req.End != "" && req.Duration != "":
		errs = append(errs, &inventory.FieldError{Field: "duration", Reason: "give end or duration, not both"})
	case req.End != "":
		t, err := parseTime("end", req.End)
		errs = append(errs, err)
		l.End = t
	case req.Duration != "":
		d, err := time.ParseDuration(req.Duration)
		if err != nil || d <= 0 {
			errs = append(errs, &inventory.FieldError{Field: "duration", Reason: fmt.Sprintf("%q is not a positive duration such as 90m or 72h", req.Duration)})
		}
		l.End = l.Start.Add(d)
	default:
		l.End = l.Start.Add(lim.DefaultDuration)
	}
	if err := errors.Join(errs...); err != nil {
		return lease.Lease{}, err
	}
	l.Start, l.End = lease.Normalize(l.Start), lease.Normalize(l.End)
	return l, nil
}

func parseTime(field, s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return t, &inventory.FieldError{Field: field, Reason: fmt.Sprintf("%q is not an RFC 3339 time such as 2026-12-01T09:00:00Z", s)}
	}
	return t.UTC(), nil
}

func (a *API) createLease(w http.ResponseWriter, r *http.Request) error {
	var req wire.LeaseRequest
	if err := httpx.DecodeJSON(w, r, &req, 0); err != nil {
		return err
	}
	now := a.now()
	l, err := parseLeaseRequest(req, now, a.limits)
	if err == nil {
		l, err = a.store.CreateLease(r.Context(), l, a.limits, now)
	}
	detail := "request refused before it named a valid lease"
	if !l.Start.IsZero() {
		detail = fmt.Sprintf("tenant=%s start=%s end=%s", l.Tenant, l.Start.Format(time.RFC3339), l.End.Format(time.RFC3339))
	}
	a.audit(r, "lease.create", "node/"+auditName(l.Node), detail, err)
	if err != nil {
		return err
	}
	w.Header().Set("Location", fmt.Sprintf("/api/v1/leases/%d", l.ID))
	httpx.WriteJSON(w, http.StatusCreated, a.view(l))
	return nil
}

func (a *API) listLeases(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := store.LeaseFilter{Node: q.Get("node"), Tenant: q.Get("tenant"), Now: a.now()}
	var errs []error
	for key, dst := range map[string]*string{"node": &f.Node, "tenant": &f.Tenant} {
		if *dst != "" {
			errs = append(errs, inventory.ValidateName(key, *dst))
		}
	}
	for key, dst := range map[string]*time.Time{"from": &f.From, "to": &f.To} {
		if s := q.Get(key); s != "" {
			t, err := parseTime(key, s)
			errs = append(errs, err)
			*dst = t
		}
	}
	if s := q.Get("state"); s != "" {
		st, err := lease.ParseState(s)
		if err != nil {
			errs = append(errs, &inventory.FieldError{Field: "state", Reason: err.Error()})
		}
		f.State = st
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 10000 {
			errs = append(errs, &inventory.FieldError{Field: "limit", Reason: "must be 1-10000"})
		}
		f.Limit = n
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	ls, err := a.store.ListLeases(r.Context(), f)
	if err != nil {
		return err
	}
	out := make([]wire.Lease, len(ls))
	for i, l := range ls {
		out[i] = wire.Lease{Lease: l, State: l.StateAt(f.Now)}
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

func pathID(r *http.Request) (int64, error) { return pathIDOf(r, "lease") }

// pathIDOf parses the {id} of a route about a what (lease, handover, pass).
func pathIDOf(r *http.Request, what string) (int64, error) {
	s := mux.Vars(r)["id"]
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id < 1 {
		return 0, &httpx.Error{Status: http.StatusBadRequest, Message: fmt.Sprintf("%s id %q is not a positive integer", what, s)}
	}
	return id, nil
}

func (a *API) getLease(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	l, err := a.store.GetLease(r.Context(), id)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, a.view(l))
	return nil
}

func (a *API) cancelLease(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	l, err := a.store.CancelLease(r.Context(), id, a.now())
	a.audit(r, "lease.cancel", fmt.Sprintf("lease/%d", id), "", err)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, a.view(l))
	return nil
}

func (a *API) extendLease(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	var req wire.ExtendRequest
	if err := httpx.DecodeJSON(w, r, &req, 0); err != nil {
		return err
	}
	// The new end is computed from the current one inside the store's
	// write transaction, so concurrent "by" extensions add up.
	var newEnd func(cur time.Time) time.Time
	switch {
	case (req.End == "") == (req.By == ""):
		return &inventory.FieldError{Field: "end", Reason: "give exactly one of end or by"}
	case req.End != "":
		end, err := parseTime("end", req.End)
		if err != nil {
			return err
		}
		newEnd = func(time.Time) time.Time { return end }
	default:
		d, perr := time.ParseDuration(req.By)
		if perr != nil || d <= 0 {
			return &inventory.FieldError{Field: "by", Reason: fmt.Sprintf("%q is not a positive duration such as 24h", req.By)}
		}
		newEnd = func(cur time.Time) time.Time { return cur.Add(d) }
	}
	l, err := a.store.ExtendLeaseFunc(r.Context(), id, newEnd, a.limits, a.now())
	a.audit(r, "lease.extend", fmt.Sprintf("lease/%d", id), "end="+l.End.Format(time.RFC3339), err)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, a.view(l))
	return nil
}

func (a *API) listAudit(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit, before := 100, int64(0)
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			return &inventory.FieldError{Field: "limit", Reason: "must be 1-1000"}
		}
		limit = n
	}
	if s := q.Get("before"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			return &inventory.FieldError{Field: "before", Reason: "must be a positive audit entry id"}
		}
		before = n
	}
	es, err := a.store.ListAudit(r.Context(), before, limit)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, es)
	return nil
}
