package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/gorilla/mux"

	"github.com/malleable-cloud/malleable/appliance/httpx"
	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/store"
	"github.com/malleable-cloud/malleable/tenants"
)

// TenantService onboards and offboards tenants (tenants.Service).
type TenantService interface {
	Onboard(ctx context.Context, tenant string) (inventory.TenantJob, error)
	Offboard(ctx context.Context, tenant string, opts inventory.OffboardOptions) (inventory.TenantJob, error)
	Credentials(ctx context.Context, tenant string) (inventory.ForemanLogin, error)
}

func (a *API) tenantRoutes(v1 prefixed) {
	v1.Handle("/tenants/{name}/onboard", a.rs.Handle(a.onboardTenant)).Methods(http.MethodPost)
	v1.Handle("/tenants/{name}/offboard", a.rs.Handle(a.offboardTenant)).Methods(http.MethodPost)
	v1.Handle("/tenants/{name}/jobs", a.rs.Handle(a.tenantJobs)).Methods(http.MethodGet)
	v1.Handle("/tenants/{name}/jobs/{id}", a.rs.Handle(a.tenantJob)).Methods(http.MethodGet)
	v1.Handle("/tenants/{name}/credentials", a.rs.Handle(a.tenantCredentials)).Methods(http.MethodPost)
}

// errNoOnboarding answers onboarding routes of an appliance without a
// container runtime.
var errNoOnboarding = httpx.Errorf(http.StatusServiceUnavailable, "tenant onboarding is not enabled ([tenants] runtime = docker)")

func (a *API) onboardTenant(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r)
	if err != nil {
		return err
	}
	if a.tenants == nil {
		return errNoOnboarding
	}
	t, err := a.store.GetTenant(r.Context(), name)
	if err != nil {
		return err
	}
	if t.State == inventory.TenantRegistered && t.ForemanURL != "" {
		return httpx.Errorf(http.StatusConflict, "tenant %s brings its own Foreman (%s); onboarding runs the appliance's own", name, t.ForemanURL)
	}
	job, err := a.tenants.Onboard(r.Context(), name)
	a.audit(r, "tenant.onboard", "tenant/"+name, jobDetail(job), err)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusAccepted, job)
	return nil
}

func (a *API) offboardTenant(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r)
	if err != nil {
		return err
	}
	var opts inventory.OffboardOptions
	if err := httpx.DecodeJSON(w, r, &opts, 0); err != nil {
		return err
	}
	if a.tenants == nil {
		return errNoOnboarding
	}
	if _, err := a.store.GetTenant(r.Context(), name); err != nil {
		return err
	}
	job, err := a.tenants.Offboard(r.Context(), name, opts)
	a.audit(r, "tenant.offboard", "tenant/"+name, jobDetail(job), err)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusAccepted, job)
	return nil
}

func jobDetail(j inventory.TenantJob) string {
	if j.ID == 0 {
		return ""
	}
	return "job " + strconv.FormatInt(j.ID, 10)
}

func (a *API) tenantJobs(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r)
	if err != nil {
		return err
	}
	if _, err := a.store.GetTenant(r.Context(), name); err != nil {
		return err
	}
	jobs, err := a.store.TenantJobs(r.Context(), name, 50)
	if err != nil {
		return err
	}
	if jobs == nil {
		jobs = []inventory.TenantJob{}
	}
	httpx.WriteJSON(w, http.StatusOK, jobs)
	return nil
}

func (a *API) tenantJob(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r)
	if err != nil {
		return err
	}
	id, err := strconv.ParseInt(mux.Vars(r)["id"], 10, 64)
	if err != nil || id < 1 {
		return httpx.BadRequest("job id %q is not a positive integer", mux.Vars(r)["id"])
	}
	job, err := a.store.TenantJob(r.Context(), id)
	if err == nil && job.Tenant != name {
		err = store.ErrNotFound
	}
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, job)
	return nil
}

func (a *API) tenantCredentials(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r)
	if err != nil {
		return err
	}
	if a.tenants == nil {
		return errNoOnboarding
	}
	c, err := a.tenants.Credentials(r.Context(), name)
	a.audit(r, "tenant.credentials", "tenant/"+name, "", err)
	switch {
	case errors.Is(err, tenants.ErrShown):
		return httpx.Errorf(http.StatusConflict, "%s's Foreman login was already shown once", name)
	case errors.Is(err, tenants.ErrNotOnboarded):
		return httpx.Errorf(http.StatusConflict, "%s has no Foreman onboarded by this appliance", name)
	case err != nil:
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, c)
	return nil
}
