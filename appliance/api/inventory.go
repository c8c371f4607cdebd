package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/malleable-cloud/malleable/appliance/allocator/node"
	"github.com/malleable-cloud/malleable/appliance/api/wire"
	"github.com/malleable-cloud/malleable/appliance/httpx"
	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/secrets"
)

func (a *API) createNode(w http.ResponseWriter, r *http.Request) error {
	var req wire.NodeRequest
	if err := httpx.DecodeJSON(w, r, &req, 0); err != nil {
		return err
	}
	n := inventory.Node{Name: req.Name, Description: req.Description, MACs: req.MACs, TenantBMCAddress: req.TenantBMCAddress}
	if req.BMC != nil {
		n.BMC = inventory.BMC{Host: req.BMC.Host, Port: req.BMC.Port, User: req.BMC.User}
	}
	err := errors.Join(n.Normalize(), needMACOrBMC(req))
	password := ""
	if req.BMC != nil && req.BMC.Password != "" {
		password = req.BMC.Password
		err = errors.Join(err, checkBMCPassword("bmc.password", password))
		if a.secrets == nil {
			err = errors.Join(err, unavailable("a secret store for bmc.password"))
		}
	}
	if err == nil {
		err = a.checkAllocatorNode(r.Context(), n.Name)
	}
	if err == nil {
		n, err = a.store.CreateNode(r.Context(), n, a.now())
	}
	if err == nil && password != "" {
		if err = a.secrets.Put(r.Context(), secrets.BMCPasswordPath(n.Name), []byte(password)); err != nil {
			// Keep node and password together: no node without its secret.
			_ = a.store.DeleteNode(context.WithoutCancel(r.Context()), n.Name, a.now())
		}
	}
	a.audit(r, "node.create", "node/"+auditName(req.Name), "", err)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusCreated, n)
	return nil
}

// NodeChecker is an allocator that can check a node before it is added:
// hil.Client (the node exists in HIL, is free, its OBM works).
type NodeChecker interface {
	CheckNode(ctx context.Context, node string) error
}

// checkAllocatorNode refuses a node the allocator cannot lease: 422 with
// what is missing, or 503 when the allocator does not answer.
func (a *API) checkAllocatorNode(ctx context.Context, name string) error {
	c := a.checker
	if c == nil {
		return nil
	}
	if _, err := a.store.GetNode(ctx, name); err == nil {
		return nil // a duplicate: the store refuses it, and HIL's node is left alone
	}
	err := c.CheckNode(ctx, name)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, node.ErrUnavailable):
		return &httpx.Error{Status: http.StatusServiceUnavailable, Message: "cannot check the node in HIL: " + err.Error()}
	}
	return &httpx.Error{Status: http.StatusUnprocessableEntity, Message: err.Error()}
}

func (a *API) listNodes(w http.ResponseWriter, r *http.Request) error {
	nodes, err := a.store.ListNodes(r.Context())
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, nodes)
	return nil
}

func (a *API) getNode(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r)
	if err != nil {
		return err
	}
	n, err := a.store.GetNode(r.Context(), name)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, n)
	return nil
}

func (a *API) deleteNode(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r)
	if err != nil {
		return err
	}
	err = a.store.DeleteNode(r.Context(), name, a.now())
	if err == nil && a.secrets != nil {
		err = a.secrets.Delete(r.Context(), secrets.BMCPasswordPath(name))
	}
	a.audit(r, "node.delete", "node/"+name, "", err)
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) createTenant(w http.ResponseWriter, r *http.Request) error {
	var req wire.TenantRequest
	if err := httpx.DecodeJSON(w, r, &req, 0); err != nil {
		return err
	}
	t := inventory.Tenant{Name: req.Name, Description: req.Description, ForemanURL: req.ForemanURL}
	err := t.Normalize()
	if err == nil {
		t, err = a.store.CreateTenant(r.Context(), t, a.now())
	}
	a.audit(r, "tenant.create", "tenant/"+auditName(req.Name), "", err)
	if err != nil {
		return err
	}
	out := wire.TenantCreated{Tenant: t}
	// A tenant that brings no Foreman of its own gets one.
	if a.tenants != nil && t.ForemanURL == "" {
		job, err := a.tenants.Onboard(r.Context(), t.Name)
		a.audit(r, "tenant.onboard", "tenant/"+t.Name, jobDetail(job), err)
		if err != nil {
			return err
		}
		out.Job, out.State = &job, inventory.TenantOnboarding
	}
	httpx.WriteJSON(w, http.StatusCreated, out)
	return nil
}

func (a *API) listTenants(w http.ResponseWriter, r *http.Request) error {
	ts, err := a.store.ListTenants(r.Context())
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, ts)
	return nil
}

func (a *API) getTenant(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r)
	if err != nil {
		return err
	}
	t, err := a.store.GetTenant(r.Context(), name)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, t)
	return nil
}

func (a *API) deleteTenant(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r)
	if err != nil {
		return err
	}
	t, err := a.store.GetTenant(r.Context(), name)
	if err == nil && t.State != inventory.TenantRegistered {
		err = httpx.Errorf(http.StatusConflict, "tenant %s is %s: offboard it first (malleable tenant offboard %s)", name, t.State, name)
	}
	if err == nil {
		err = a.store.DeleteTenant(r.Context(), name, a.now())
	}
	a.audit(r, "tenant.delete", "tenant/"+name, "", err)
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// needMACOrBMC refuses a node the appliance could neither recognise when
// it boots (no MAC) nor power (no BMC). Invalid values given for either
// are Normalize's to report.
func needMACOrBMC(req wire.NodeRequest) error {
	if len(req.MACs) > 0 || (req.BMC != nil && req.BMC.Host != "") {
		return nil
	}
	return errors.Join(
		&inventory.FieldError{Field: "macs", Reason: "a node needs at least one MAC address (macs) or a BMC (bmc.host), or both"},
		&inventory.FieldError{Field: "bmc.host", Reason: "required when macs is empty"})
}

// pathName returns the {name} path variable, refusing anything that is not
// a valid name before it reaches the store.
func pathName(r *http.Request) (string, error) {
	name := mux.Vars(r)["name"]
	if err := inventory.ValidateName("name", name); err != nil {
		return "", err
	}
	return name, nil
}

// auditName is name as the audit log may record it: a refused request's
// name can be anything, so only valid names are written verbatim.
func auditName(name string) string {
	if inventory.ValidateName("name", name) != nil {
		return "(invalid name)"
	}
	return name
}
