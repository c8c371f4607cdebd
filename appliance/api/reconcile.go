package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/malleable-cloud/malleable/appliance/api/wire"
	"github.com/malleable-cloud/malleable/appliance/audit"
	"github.com/malleable-cloud/malleable/appliance/httpx"
	"github.com/malleable-cloud/malleable/appliance/reconcile"
	"github.com/malleable-cloud/malleable/appliance/reconcile/pass"
)

// reconcileRoutes adds the routes that start reconcile passes (a pass, or
// a stuck handover's retry) and follow them. Passes run in the daemon's
// context, never a request's: an admin's client going away does not
// interrupt a handover.
func (a *API) reconcileRoutes(v1 prefixed) {
	v1.Handle("/reconcile", a.rs.Handle(a.reconcileNow)).Methods(http.MethodPost)
	v1.Handle("/reconcile/passes/latest", a.rs.Handle(a.getPass)).Methods(http.MethodGet)
	v1.Handle("/reconcile/passes/{id}", a.rs.Handle(a.getPass)).Methods(http.MethodGet)
	v1.Handle("/handovers/{id}/retry", a.rs.Handle(a.retryHandover)).Methods(http.MethodPost)
}

func passLocation(id int64) string { return fmt.Sprintf("/api/v1/reconcile/passes/%d", id) }

// passDetail says, for the audit log, which pass a request got.
func passDetail(p pass.Record, started bool) string {
	switch {
	case p.State == pass.Queued && started:
		return fmt.Sprintf("pass %d queued behind pass %d", p.ID, p.QueuedBehind)
	case started:
		return fmt.Sprintf("pass %d started", p.ID)
	}
	return fmt.Sprintf("pass %d was already %s (%s)", p.ID, p.State, p.Trigger)
}

// reconcileNow starts a pass and answers 202 with its record, or 200 with
// the pass already running: never two at once.
func (a *API) reconcileNow(w http.ResponseWriter, r *http.Request) error {
	if a.reconciler == nil {
		return unavailable("the reconciler")
	}
	p, started, err := a.reconciler.Start(pass.TriggerAPI, audit.Actor(r.Context()), false)
	if errors.Is(err, reconcile.ErrNotServing) {
		err = &httpx.Error{Status: http.StatusServiceUnavailable, Message: "the reconciler is not running (the appliance is shutting down)"}
	}
	if err != nil {
		a.audit(r, "reconcile.request", "reconcile", "", err)
		return err
	}
	a.audit(r, "reconcile.request", fmt.Sprintf("pass/%d", p.ID), passDetail(p, started), nil)
	w.Header().Set("Location", passLocation(p.ID))
	status := http.StatusOK
	if started {
		status = http.StatusAccepted
	}
	httpx.WriteJSON(w, status, p)
	return nil
}

func (a *API) getPass(w http.ResponseWriter, r *http.Request) error {
	if a.reconciler == nil {
		return unavailable("the reconciler")
	}
	var id int64
	if _, ok := mux.Vars(r)["id"]; ok {
		var err error
		if id, err = pathIDOf(r, "pass"); err != nil {
			return err
		}
	}
	p, ok := a.reconciler.LookupPass(id)
	if !ok && id == 0 {
		return &httpx.Error{Status: http.StatusNotFound, Message: "no reconcile pass has run yet"}
	}
	if !ok {
		return &httpx.Error{Status: http.StatusNotFound, Message: fmt.Sprintf("pass %d is not among the last %d passes", id, reconcile.PassHistory)}
	}
	httpx.WriteJSON(w, http.StatusOK, p)
	return nil
}

// retryHandover sets a stuck handover running again and asks for a pass
// that starts after the retry (queued behind a running one); it answers
// 202 with the handover and that pass, whose record shows its progress.
func (a *API) retryHandover(w http.ResponseWriter, r *http.Request) error {
	id, err := pathIDOf(r, "handover")
	if err != nil {
		return err
	}
	target := fmt.Sprintf("handover/%d", id)
	h, err := a.store.RetryHandover(r.Context(), id, a.now())
	if err != nil {
		a.audit(r, "handover.retry", target, "", err)
		return err
	}
	var p pass.Record
	started, err := false, reconcile.ErrNotServing
	if a.reconciler != nil {
		p, started, err = a.reconciler.Start(pass.TriggerRetry, audit.Actor(r.Context()), true)
	}
	if err != nil {
		// No reconciler, or shutting down. The handover is running
		// again: the next pass (after a restart) resumes it.
		a.audit(r, "handover.retry", target, "no pass now: the next one resumes it", nil)
		httpx.WriteJSON(w, http.StatusOK, wire.Retry{Handover: h})
		return nil
	}
	a.audit(r, "handover.retry", target, passDetail(p, started), nil)
	w.Header().Set("Location", passLocation(p.ID))
	httpx.WriteJSON(w, http.StatusAccepted, wire.Retry{Handover: h, Pass: &p})
	return nil
}
