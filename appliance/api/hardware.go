package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/malleable-cloud/malleable/appliance/allocator/node"
	"github.com/malleable-cloud/malleable/appliance/api/wire"
	"github.com/malleable-cloud/malleable/appliance/httpx"
	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/lease"
	"github.com/malleable-cloud/malleable/appliance/power"
	"github.com/malleable-cloud/malleable/appliance/secrets"
	"github.com/malleable-cloud/malleable/appliance/store"
	"github.com/malleable-cloud/malleable/tenants"
)

// maxBMCPassword is IPMI 2.0's longest password.
const maxBMCPassword = 20

// hardwareRoutes adds the admin routes for power, BMC credentials,
// handovers, tenant broker tokens; reconcileRoutes adds on-demand passes.
func (a *API) hardwareRoutes(v1 prefixed) {
	v1.Handle("/nodes/{name}/holder", a.rs.Handle(a.nodeHolder)).Methods(http.MethodGet)
	v1.Handle("/nodes/{name}/power", a.rs.Handle(a.nodePower)).Methods(http.MethodGet)
	v1.Handle("/nodes/{name}/power", a.rs.Handle(a.nodePowerAction)).Methods(http.MethodPut)
	v1.Handle("/nodes/{name}/bmc-password", a.rs.Handle(a.setBMCPassword)).Methods(http.MethodPut)
	v1.Handle("/handovers", a.rs.Handle(a.listHandovers)).Methods(http.MethodGet)
	v1.Handle("/handovers/{id}", a.rs.Handle(a.getHandover)).Methods(http.MethodGet)
	v1.Handle("/tenants/{name}/token", a.rs.Handle(a.issueTenantToken)).Methods(http.MethodPost)
	a.reconcileRoutes(v1)
}

// nodePower answers a node's real power state and who holds it.
func (a *API) nodePower(w http.ResponseWriter, r *http.Request) error {
	if a.power == nil {
		return unavailable("an allocator")
	}
	h, err := a.holder(r)
	if err != nil {
		return err
	}
	name := h.Node
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	on, err := a.power.ReadPower(ctx, name)
	if err != nil {
		return power.AnswerError(name, err, false)
	}
	state := "off"
	if on {
		state = "on"
	}
	httpx.WriteJSON(w, http.StatusOK, wire.Power{Node: name, Power: state, Holder: h.Holder})
	return nil
}

// nodeHolder answers who holds a node now, from the store alone.
func (a *API) nodeHolder(w http.ResponseWriter, r *http.Request) error {
	h, err := a.holder(r)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, h)
	return nil
}

// holder is who holds the {name} node, which must exist.
func (a *API) holder(r *http.Request) (wire.Holder, error) {
	name, err := pathName(r)
	if err != nil {
		return wire.Holder{}, err
	}
	if _, err := a.store.GetNode(r.Context(), name); err != nil {
		return wire.Holder{}, err
	}
	holder, err := a.store.Holder(r.Context(), name)
	return wire.Holder{Node: name, Holder: holder}, err
}

// nodePowerAction lets an admin drive a node nobody holds. A held node's
// power belongs to its lessee: refusing here keeps the invariant that only
// the holder's commands reach the BMC.
func (a *API) nodePowerAction(w http.ResponseWriter, r *http.Request) error {
	if a.power == nil {
		return unavailable("an allocator")
	}
	name, err := pathName(r)
	if err != nil {
		return err
	}
	var req wire.PowerRequest
	if err := httpx.DecodeJSON(w, r, &req, 0); err != nil {
		return err
	}
	action, err := node.ParsePowerAction(req.Action)
	if err != nil {
		return &inventory.FieldError{Field: "action", Reason: err.Error()}
	}
	if _, err := a.store.GetNode(r.Context(), name); err != nil {
		return err
	}
	// Under the node's gate: an activation cannot make a tenant the
	// holder between this check and the command.
	err = a.power.Command(r.Context(), name, func(ctx context.Context) error {
		holder, err := a.store.Holder(ctx, name)
		if err != nil {
			return err
		}
		if holder != "" {
			return httpx.Errorf(http.StatusConflict, "node %s is held by tenant %s: only its lessee drives its power (cancel the lease first)", name, holder)
		}
		// Between fence and activate nobody holds the node, but the
		// handover owns its power: a power-on there would hand the next
		// tenant a running node (or boot the old tenant's disk).
		if open, err := a.store.HandoverOpen(ctx, name); err != nil {
			return err
		} else if open {
			return httpx.Errorf(http.StatusConflict, "node %s is being handed over: its power belongs to the handover until it ends (malleable lease handovers --node %s)", name, name)
		}
		if err := a.power.Power(ctx, name, action); err != nil {
			return power.AnswerError(name, err, false)
		}
		return nil
	})
	a.audit(r, "power."+string(action), "node/"+name, "by admin", err)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"node": name, "action": string(action), "result": true})
	return nil
}

func checkBMCPassword(field, pw string) error {
	if pw == "" || len(pw) > maxBMCPassword {
		return &inventory.FieldError{Field: field, Reason: fmt.Sprintf("must be 1-%d bytes (IPMI 2.0)", maxBMCPassword)}
	}
	return nil
}

func (a *API) setBMCPassword(w http.ResponseWriter, r *http.Request) error {
	if a.secrets == nil {
		return unavailable("a secret store")
	}
	name, err := pathName(r)
	if err != nil {
		return err
	}
	var req wire.PasswordRequest
	if err := httpx.DecodeJSON(w, r, &req, 0); err != nil {
		return err
	}
	err = checkBMCPassword("password", req.Password)
	if err == nil {
		_, err = a.store.GetNode(r.Context(), name)
	}
	if err == nil {
		err = a.secrets.Put(r.Context(), secrets.BMCPasswordPath(name), []byte(req.Password))
	}
	a.audit(r, "node.bmc_password", "node/"+name, "", err)
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) listHandovers(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := store.HandoverFilter{Node: q.Get("node"), Status: lease.HandoverStatus(q.Get("status")), Open: q.Get("open") == "true", Limit: 100}
	if f.Node != "" {
		if err := inventory.ValidateName("node", f.Node); err != nil {
			return err
		}
	}
	switch f.Status {
	case "", lease.HandoverRunning, lease.HandoverStuck, lease.HandoverDone:
	default:
		return &inventory.FieldError{Field: "status", Reason: "must be running, stuck or done"}
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 10000 {
			return &inventory.FieldError{Field: "limit", Reason: "must be 1-10000"}
		}
		f.Limit = n
	}
	hs, err := a.store.ListHandovers(r.Context(), f)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, hs)
	return nil
}

func (a *API) getHandover(w http.ResponseWriter, r *http.Request) error {
	id, err := pathIDOf(r, "handover")
	if err != nil {
		return err
	}
	h, err := a.store.GetHandover(r.Context(), id)
	if err != nil {
		return err
	}
	j, err := a.store.HandoverJournal(r.Context(), id)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, wire.Handover{Handover: h, Journal: j})
	return nil
}

// issueTenantToken gives a tenant a new broker token, replacing the old one.
// The token is in this answer only: the store keeps its hash.
func (a *API) issueTenantToken(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r)
	if err != nil {
		return err
	}
	buf := make([]byte, 32)
	rand.Read(buf)
	token := "mlb_" + hex.EncodeToString(buf)
	t, err := a.store.GetTenant(r.Context(), name)
	if err == nil && t.State != inventory.TenantRegistered {
		// An onboarded tenant's smart-proxy gets its token from the
		// secret store: the drift pass redeploys the proxy with the new
		// one, and nothing puts the old one back.
		if a.secrets == nil {
			err = unavailable("a secret store")
		} else {
			err = a.secrets.Put(r.Context(), tenants.SecretPath(name, tenants.SecretBrokerToken), []byte(token))
		}
	}
	if err == nil {
		err = a.store.SetTenantToken(r.Context(), name, store.TokenHash(token))
	}
	a.audit(r, "tenant.token", "tenant/"+name, "new broker token issued", err)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusCreated, map[string]string{"tenant": name, "token": token})
	return nil
}
