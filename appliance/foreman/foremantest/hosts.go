package foremantest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

type host struct {
	Name     string
	Org, Loc int
	NICs     []*nic
}

type nic struct {
	ID                           int
	Type, Identifier, MAC, IP    string
	Primary, Provision, Managed  bool
	Provider, Username, Password string
	Subnet                       int
}

func (f *Fixture) hostJSON(id int, full bool) map[string]any {
	h := f.hosts[id]
	m := map[string]any{"id": id, "name": h.Name, "managed": false, "build": false,
		"organization_id": nilID(h.Org), "organization_name": nilStr(f.taxa["organizations"][h.Org]),
		"location_id": nilID(h.Loc), "location_name": nilStr(f.taxa["locations"][h.Loc])}
	for _, n := range h.NICs {
		if n.Primary {
			m["mac"] = nilStr(n.MAC)
		}
	}
	if full {
		nics := []any{}
		for _, n := range h.NICs {
			nm := map[string]any{"id": n.ID, "type": n.Type, "identifier": nilStr(n.Identifier), "mac": nilStr(n.MAC),
				"ip": nilStr(n.IP), "primary": n.Primary, "provision": n.Provision, "managed": n.Managed,
				"subnet_id": nilID(n.Subnet), "name": nil}
			if n.Primary {
				nm["name"] = h.Name
			}
			if n.Type == "bmc" {
				nm["provider"], nm["username"] = n.Provider, n.Username
			}
			nics = append(nics, nm)
		}
		m["interfaces"] = nics
	}
	return m
}

func nilStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func (f *Fixture) hostIndex(w http.ResponseWriter, r *http.Request, _ map[string]any) {
	listByName(w, r, f.hosts, func(v *host) string { return v.Name }, func(id int) any { return f.hostJSON(id, false) })
}

func (f *Fixture) hostShow(w http.ResponseWriter, r *http.Request, _ map[string]any) {
	showOne(w, r, f.hosts, "host", func(id int) any { return f.hostJSON(id, true) })
}

func (f *Fixture) hostCreate(w http.ResponseWriter, r *http.Request, body map[string]any) {
	h := &host{}
	if !f.hostSave(w, 0, h, attrs(body, "host")) {
		return
	}
	id := f.id()
	f.hosts[id] = h
	writeJSON(w, http.StatusCreated, f.hostJSON(id, true))
}

func (f *Fixture) hostUpdate(w http.ResponseWriter, r *http.Request, body map[string]any) {
	id := pathID(r)
	old, ok := f.hosts[id]
	if !ok {
		notFound(w, "host", r.PathValue("id"))
		return
	}
	h := *old
	h.NICs = nil
	for _, n := range old.NICs {
		c := *n
		h.NICs = append(h.NICs, &c)
	}
	if !f.hostSave(w, id, &h, attrs(body, "host")) {
		return
	}
	f.hosts[id] = &h
	writeJSON(w, http.StatusOK, f.hostJSON(id, true))
}

func (f *Fixture) hostDelete(w http.ResponseWriter, r *http.Request, _ map[string]any) {
	id := pathID(r)
	if _, ok := f.hosts[id]; !ok {
		notFound(w, "host", r.PathValue("id"))
		return
	}
	out := f.hostJSON(id, false)
	delete(f.hosts, id)
	writeJSON(w, http.StatusOK, out)
}

// hostSave applies a host's attributes: interfaces with an id change that
// interface, the others are added (as Rails' nested attributes do).
func (f *Fixture) hostSave(w http.ResponseWriter, id int, h *host, a map[string]any) bool {
	if v, ok := str(a, "name"); ok {
		h.Name = strings.ToLower(v)
	}
	if _, ok := a["organization_id"]; ok {
		h.Org = num(a, "organization_id")
	}
	if _, ok := a["location_id"]; ok {
		h.Loc = num(a, "location_id")
	}
	list, _ := a["interfaces_attributes"].([]any)
	for _, item := range list {
		m, _ := item.(map[string]any)
		var n *nic
		if nid := num(m, "id"); nid != 0 {
			for _, have := range h.NICs {
				if have.ID == nid {
					n = have
				}
			}
		}
		if n == nil {
			n = &nic{ID: f.id(), Type: "interface"}
			h.NICs = append(h.NICs, n)
		}
		for k, p := range map[string]*string{"type": &n.Type, "identifier": &n.Identifier, "ip": &n.IP,
			"provider": &n.Provider, "username": &n.Username, "password": &n.Password} {
			if v, ok := str(m, k); ok {
				*p = v
			}
		}
		if v, ok := str(m, "mac"); ok {
			n.MAC = strings.ToLower(v)
		}
		for k, p := range map[string]*bool{"primary": &n.Primary, "provision": &n.Provision, "managed": &n.Managed} {
			if v, ok := m[k].(bool); ok {
				*p = v
			}
		}
		if _, ok := m["subnet_id"]; ok {
			n.Subnet = num(m, "subnet_id")
		}
	}
	errs, full := map[string][]string{}, []string(nil)
	add := func(attr, msg, fullMsg string) {
		errs[attr] = append(errs[attr], msg)
		full = append(full, fullMsg)
	}
	if h.Name == "" {
		add("name", "can't be blank", "Name can't be blank")
	} else if taken(f.hosts, id, h.Name, func(v *host) string { return v.Name }) {
		add("name", "has already been taken", "Name has already been taken")
	}
	for _, n := range h.NICs {
		if n.IP != "" {
			if _, err := netip.ParseAddr(n.IP); err != nil {
				add("interfaces.ip", "is invalid", "Ip is invalid")
			}
		}
		if n.Type == "bmc" && n.Provider != "IPMI" && n.Provider != "Redfish" && n.Provider != "SSH" {
			add("interfaces.provider", "is not included in the list", "Provider is not included in the list")
		}
	}
	if len(full) > 0 {
		invalid(w, nilID(id), errs, full)
		return false
	}
	return true
}

// bmcCall sends a BMC request for host id to its BMC proxy, as Foreman's
// ProxyAPI::BMC does, and returns the proxy's JSON answer.
func (f *Fixture) bmcCall(ctx context.Context, id int, method, action string) (map[string]any, int, error) {
	h := f.hosts[id]
	var b *nic
	for _, n := range h.NICs {
		if n.Type == "bmc" {
			b = n
		}
	}
	if b == nil || b.Username == "" || b.Password == "" {
		return nil, 0, errNoBMCProxy
	}
	proxy := 0
	if s, ok := f.subnets[b.Subnet]; ok && s.BMC != 0 {
		proxy = s.BMC
	} else {
		for _, pid := range sortedIDs(f.proxies) {
			for _, ft := range f.proxies[pid].Features {
				if ft.Name == "BMC" && proxy == 0 {
					proxy = pid
				}
			}
		}
	}
	p, ok := f.proxies[proxy]
	if !ok {
		return nil, 0, errNoBMCProxy
	}
	u := p.URL + "/bmc/" + url.PathEscape(b.IP) + "/chassis/power/" + action
	var body io.Reader
	if method == http.MethodPut {
		body = strings.NewReader(url.Values{"bmc_provider": {"ipmitool"}}.Encode())
	} else {
		u += "?bmc_provider=ipmitool"
	}
	user, pass := b.Username, b.Password
	f.mu.Unlock()
	defer f.mu.Lock()
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, 0, err
	}
	req.SetBasicAuth(user, pass)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := f.proxy.Do(req)
	if err != nil {
		return nil, http.StatusInternalServerError, fmt.Errorf("ERF12-1772 [Foreman::WrappedException]: Unable to perform power BMC operation ([%T]: %v)", err, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return nil, http.StatusInternalServerError, fmt.Errorf("ERF12-1772 [Foreman::WrappedException]: Unable to perform power BMC operation ([RestClient::%s]: %d %s)",
			strings.ReplaceAll(http.StatusText(resp.StatusCode), " ", ""), resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	var out map[string]any
	json.Unmarshal(raw, &out)
	return out, 200, nil
}

func (f *Fixture) powerShow(w http.ResponseWriter, r *http.Request, _ map[string]any) {
	id := pathID(r)
	if _, ok := f.hosts[id]; !ok {
		notFound(w, "host", r.PathValue("id"))
		return
	}
	out, status, err := f.bmcCall(r.Context(), id, http.MethodGet, "status")
	if err == errNoBMCProxy {
		writeJSON(w, http.StatusOK, map[string]any{"id": id, "statusText": "Failed to fetch power status: ERF88-9474 [Foreman::BMCFeatureException]: There is no proxy with BMC feature set up. Associate a BMC feature with a subnet.",
			"state": "na", "title": "N/A"})
		return
	}
	if err != nil {
		errorMessage(w, status, err.Error())
		return
	}
	state, _ := out["result"].(string)
	title := map[string]string{"on": "On", "off": "Off"}[state]
	if title == "" {
		state, title = "off", "Off"
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "state": state, "title": title})
}

// errNoBMCProxy: the host has no BMC interface with credentials, or no
// proxy with the BMC feature serves it.
var errNoBMCProxy = errors.New("no BMC proxy")

// powerActions maps the API's power_action to the BMC proxy's action
// (reboot soft-shuts-down and reset power-cycles: Foreman bug #3073).
var powerActions = map[string]string{"on": "on", "start": "on", "off": "off", "stop": "off", "poweroff": "off",
	"soft": "soft", "reboot": "soft", "cycle": "cycle", "reset": "cycle"}

func (f *Fixture) powerSet(w http.ResponseWriter, r *http.Request, body map[string]any) {
	id := pathID(r)
	if _, ok := f.hosts[id]; !ok {
		notFound(w, "host", r.PathValue("id"))
		return
	}
	a, _ := str(body, "power_action")
	act, ok := powerActions[a]
	if !ok {
		writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"error": "Unknown power action: available methods are start, stop, poweroff, reboot, reset, soft, cycle, state, on, off, status, ready?"})
		return
	}
	out, status, err := f.bmcCall(r.Context(), id, http.MethodPut, act)
	if err != nil {
		errorMessage(w, status, err.Error())
		return
	}
	res, _ := out["result"].(bool)
	writeJSON(w, http.StatusOK, map[string]any{"power": res})
}

type template struct {
	Name, Body string
	Kind       int
	Orgs, Locs []int
}

func (f *Fixture) kindIndex(w http.ResponseWriter, r *http.Request, _ map[string]any) {
	var out []any
	// Foreman 3.12 answers per_page=all here with the total and no results.
	if r.URL.Query().Get("per_page") != "all" {
		for _, id := range sortedIDs(f.kinds) {
			out = append(out, map[string]any{"id": id, "name": f.kinds[id]})
		}
	}
	index(w, r, len(f.kinds), out)
}

func (f *Fixture) templateJSON(id int, full bool) map[string]any {
	t := f.tmpls[id]
	m := map[string]any{"id": id, "name": t.Name, "template_kind_id": nilID(t.Kind),
		"template_kind_name": nilStr(f.kinds[t.Kind]), "snippet": false, "locked": false}
	if full {
		m["template"] = t.Body
	}
	return m
}

func (f *Fixture) templateIndex(w http.ResponseWriter, r *http.Request, _ map[string]any) {
	listByName(w, r, f.tmpls, func(v *template) string { return v.Name }, func(id int) any { return f.templateJSON(id, false) })
}

func (f *Fixture) templateShow(w http.ResponseWriter, r *http.Request, _ map[string]any) {
	showOne(w, r, f.tmpls, "provisioning_template", func(id int) any { return f.templateJSON(id, true) })
}

func (f *Fixture) templateCreate(w http.ResponseWriter, r *http.Request, body map[string]any) {
	t := &template{}
	if !f.templateSave(w, 0, t, attrs(body, "provisioning_template")) {
		return
	}
	id := f.id()
	f.tmpls[id] = t
	writeJSON(w, http.StatusCreated, f.templateJSON(id, true))
}

func (f *Fixture) templateUpdate(w http.ResponseWriter, r *http.Request, body map[string]any) {
	id := pathID(r)
	old, ok := f.tmpls[id]
	if !ok {
		notFound(w, "provisioning_template", r.PathValue("id"))
		return
	}
	t := *old
	if !f.templateSave(w, id, &t, attrs(body, "provisioning_template")) {
		return
	}
	f.tmpls[id] = &t
	writeJSON(w, http.StatusOK, f.templateJSON(id, true))
}

func (f *Fixture) templateSave(w http.ResponseWriter, id int, t *template, a map[string]any) bool {
	if v, ok := str(a, "name"); ok {
		t.Name = v
	}
	if v, ok := str(a, "template"); ok {
		t.Body = v
	}
	if _, ok := a["template_kind_id"]; ok {
		t.Kind = num(a, "template_kind_id")
	}
	errs, full := map[string][]string{}, []string(nil)
	add := func(attr, msg, fullMsg string) {
		errs[attr] = append(errs[attr], msg)
		full = append(full, fullMsg)
	}
	if t.Name == "" {
		add("name", "can't be blank", "Name can't be blank")
	} else if taken(f.tmpls, id, t.Name, func(v *template) string { return v.Name }) {
		add("name", "has already been taken", "Name has already been taken")
	}
	if t.Body == "" {
		add("template", "can't be blank", "Template can't be blank")
	}
	if len(full) > 0 {
		invalid(w, nilID(id), errs, full)
		return false
	}
	return true
}
