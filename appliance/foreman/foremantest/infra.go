package foremantest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

type smartProxy struct {
	Name, URL string
	Features  []feature
	Orgs      []int
	Locs      []int
}

type feature struct {
	ID           int      `json:"id"`
	Name         string   `json:"name"`
	Capabilities []string `json:"capabilities"`
}

// seededFeatures are Foreman's core feature names and ids
// (db/seeds.d/110-smart_proxy_features.rb), keyed by the proxy's name for them.
var seededFeatures = map[string]feature{"bmc": {ID: 6, Name: "BMC"}, "logs": {ID: 11, Name: "Logs"},
	"templates": {ID: 1, Name: "Templates"}, "tftp": {ID: 2, Name: "TFTP"}, "dns": {ID: 3, Name: "DNS"},
	"dhcp": {ID: 4, Name: "DHCP"}, "puppetca": {ID: 5, Name: "Puppet CA"}, "realm": {ID: 7, Name: "Realm"},
	"facts": {ID: 8, Name: "Facts"}, "httpboot": {ID: 9, Name: "HTTPBoot"}, "externalipam": {ID: 10, Name: "External IPAM"},
	"registration": {ID: 12, Name: "Registration"}}

func (f *Fixture) proxyJSON(id int, full bool) map[string]any {
	p := f.proxies[id]
	m := map[string]any{"id": id, "name": p.Name, "url": p.URL, "hosts_count": 0}
	if full {
		fs := p.Features
		if fs == nil {
			fs = []feature{}
		}
		m["features"] = fs
		m["organizations"] = f.refs("organizations", p.Orgs)
		m["locations"] = f.refs("locations", p.Locs)
	}
	return m
}

func (f *Fixture) refs(kind string, ids []int) []any {
	out := []any{}
	for _, id := range ids {
		out = append(out, map[string]any{"id": id, "name": f.taxa[kind][id], "title": f.taxa[kind][id]})
	}
	return out
}

func (f *Fixture) proxyIndex(w http.ResponseWriter, r *http.Request, _ map[string]any) {
	listByName(w, r, f.proxies, func(v *smartProxy) string { return v.Name }, func(id int) any { return f.proxyJSON(id, false) })
}

func (f *Fixture) proxyShow(w http.ResponseWriter, r *http.Request, _ map[string]any) {
	showOne(w, r, f.proxies, "smart_proxy", func(id int) any { return f.proxyJSON(id, true) })
}

func (f *Fixture) proxyCreate(w http.ResponseWriter, r *http.Request, body map[string]any) {
	a := attrs(body, "smart_proxy")
	p := &smartProxy{Orgs: ids(a, "organization_ids"), Locs: ids(a, "location_ids")}
	p.Name, _ = str(a, "name")
	u, _ := str(a, "url")
	p.URL = strings.TrimRight(u, "/")
	if !f.proxySave(w, r, 0, p) {
		return
	}
	id := f.id()
	f.proxies[id] = p
	writeJSON(w, http.StatusCreated, f.proxyJSON(id, true))
}

func (f *Fixture) proxyUpdate(w http.ResponseWriter, r *http.Request, body map[string]any) {
	id := pathID(r)
	old, ok := f.proxies[id]
	if !ok {
		notFound(w, "smart_proxy", r.PathValue("id"))
		return
	}
	p := *old
	a := attrs(body, "smart_proxy")
	if n, ok := str(a, "name"); ok {
		p.Name = n
	}
	if u, ok := str(a, "url"); ok {
		p.URL = strings.TrimRight(u, "/")
	}
	if _, ok := a["organization_ids"]; ok {
		p.Orgs = ids(a, "organization_ids")
	}
	if _, ok := a["location_ids"]; ok {
		p.Locs = ids(a, "location_ids")
	}
	if !f.proxySave(w, r, id, &p) {
		return
	}
	f.proxies[id] = &p
	writeJSON(w, http.StatusOK, f.proxyJSON(id, true))
}

func (f *Fixture) proxyRefresh(w http.ResponseWriter, r *http.Request, _ map[string]any) {
	id := pathID(r)
	p, ok := f.proxies[id]
	if !ok {
		notFound(w, "smart_proxy", r.PathValue("id"))
		return
	}
	if !f.proxySave(w, r, id, p) {
		return
	}
	writeJSON(w, http.StatusOK, f.proxyJSON(id, true))
}

func (f *Fixture) proxyDelete(w http.ResponseWriter, r *http.Request, _ map[string]any) {
	id := pathID(r)
	if _, ok := f.proxies[id]; !ok {
		notFound(w, "smart_proxy", r.PathValue("id"))
		return
	}
	for _, s := range f.subnets {
		if s.BMC == id {
			s.BMC = 0
		}
	}
	out := f.proxyJSON(id, false)
	delete(f.proxies, id)
	writeJSON(w, http.StatusOK, out)
}

// proxySave validates p and imports its features the way Foreman's
// before_save does: GET <url>/v2/features with Foreman's client
// certificate, keeping running features Foreman knows.
func (f *Fixture) proxySave(w http.ResponseWriter, r *http.Request, id int, p *smartProxy) bool {
	errs := map[string][]string{}
	var full []string
	add := func(attr, msg, fullMsg string) {
		errs[attr] = append(errs[attr], msg)
		full = append(full, fullMsg)
	}
	if strings.TrimSpace(p.Name) == "" {
		add("name", "can't be blank", "Name can't be blank")
	} else if taken(f.proxies, id, p.Name, func(s *smartProxy) string { return s.Name }) {
		add("name", "has already been taken", "Name has already been taken")
	}
	if u, err := url.Parse(p.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		add("url", "is invalid", "Url is invalid")
	} else if taken(f.proxies, id, p.URL, func(s *smartProxy) string { return s.URL }) {
		add("url", "has already been taken", "Url has already been taken")
	}
	if len(full) == 0 {
		// Foreman holds its lock for no one but itself; the proxy call
		// happens outside the fixture's lock.
		f.mu.Unlock()
		fs, refusal := f.features(r.Context(), p.URL)
		f.mu.Lock()
		for _, m := range refusal {
			add("base", m, m)
		}
		if refusal == nil {
			p.Features = fs
		}
	}
	if len(full) > 0 {
		invalid(w, nilID(id), errs, full)
		return false
	}
	return true
}

// features calls the proxy as Foreman does and returns the features
// Foreman would import, or the messages of Foreman's refusal.
func (f *Fixture) features(ctx context.Context, base string) ([]feature, []string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v2/features", nil)
	if err != nil {
		return nil, []string{"Unable to communicate with the proxy: " + err.Error()}
	}
	req.Header.Set("Accept", "application/json")
	resp, err := f.proxy.Do(req)
	if err != nil {
		cause := fmt.Sprintf("[%T]: %v", err, err)
		if errors.Is(err, syscall.ECONNREFUSED) {
			host := req.URL.Host
			cause = fmt.Sprintf("[Errno::ECONNREFUSED]: Failed to open TCP connection to %s (Connection refused - connect(2) for %s)", host, host)
		}
		return nil, unreachable(cause, base)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return nil, unreachable(fmt.Sprintf("[RestClient::%s]: %d %s", strings.ReplaceAll(http.StatusText(resp.StatusCode), " ", ""),
			resp.StatusCode, http.StatusText(resp.StatusCode)), base)
	}
	var v2 map[string]struct {
		State        string   `json:"state"`
		Capabilities []string `json:"capabilities"`
	}
	if err := json.Unmarshal(b, &v2); err != nil {
		return nil, []string{"Unable to communicate with the proxy: " + err.Error()}
	}
	var unknown []string
	var fs []feature
	for name, d := range v2 {
		if d.State != "running" {
			continue
		}
		sf, ok := seededFeatures[strings.ToLower(strings.ReplaceAll(name, " ", ""))]
		if !ok {
			unknown = append(unknown, name)
			continue
		}
		sf.Capabilities = append([]string{}, d.Capabilities...)
		fs = append(fs, sf)
	}
	switch {
	case len(fs) == 0 && len(unknown) > 0:
		sort.Strings(unknown)
		return nil, []string{fmt.Sprintf("Features \"%s\" in this proxy are not recognized by Foreman. If these features come from a Smart Proxy plugin, make sure Foreman has the plugin installed too.", strings.Join(unknown, ", "))}
	case len(fs) == 0:
		return nil, []string{"No features found on this proxy, please make sure you enable at least one feature"}
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].Name < fs[j].Name })
	return fs, nil
}

// unreachable is Foreman's refusal of a proxy whose features it could
// not read: two full messages, as Foreman 3.12 answered here.
func unreachable(cause, base string) []string {
	return []string{fmt.Sprintf("Unable to communicate with the proxy: ERF12-2530 [ProxyAPI::ProxyException]: Unable to detect features (%s) for proxy %s/v2/features", cause, base),
		"Please check the proxy is configured and running on the host."}
}

type subnet struct {
	Name, Network, Mask string
	BMC                 int
	Orgs, Locs          []int
}

func (f *Fixture) subnetJSON(id int) map[string]any {
	s := f.subnets[id]
	var bmcID, bmcName any
	if p, ok := f.proxies[s.BMC]; ok {
		bmcID, bmcName = s.BMC, p.Name
	}
	return map[string]any{"id": id, "name": s.Name, "network": s.Network, "mask": s.Mask, "cidr": maskBits(s.Mask),
		"network_address": s.Network + "/" + strconv.Itoa(maskBits(s.Mask)), "bmc_id": bmcID, "bmc_name": bmcName,
		"ipam": "None", "boot_mode": "Static", "network_type": "IPv4"}
}

func maskBits(mask string) int {
	n := 0
	for _, part := range strings.Split(mask, ".") {
		v, _ := strconv.Atoi(part)
		for ; v > 0; v = (v << 1) & 0xff {
			n++
		}
	}
	return n
}

func (f *Fixture) subnetIndex(w http.ResponseWriter, r *http.Request, _ map[string]any) {
	listByName(w, r, f.subnets, func(v *subnet) string { return v.Name }, func(id int) any { return f.subnetJSON(id) })
}

func (f *Fixture) subnetCreate(w http.ResponseWriter, r *http.Request, body map[string]any) {
	s := &subnet{}
	if !f.subnetSave(w, 0, s, attrs(body, "subnet")) {
		return
	}
	id := f.id()
	f.subnets[id] = s
	writeJSON(w, http.StatusCreated, f.subnetJSON(id))
}

func (f *Fixture) subnetUpdate(w http.ResponseWriter, r *http.Request, body map[string]any) {
	id := pathID(r)
	old, ok := f.subnets[id]
	if !ok {
		notFound(w, "subnet", r.PathValue("id"))
		return
	}
	s := *old
	if !f.subnetSave(w, id, &s, attrs(body, "subnet")) {
		return
	}
	f.subnets[id] = &s
	writeJSON(w, http.StatusOK, f.subnetJSON(id))
}

func (f *Fixture) subnetSave(w http.ResponseWriter, id int, s *subnet, a map[string]any) bool {
	if v, ok := str(a, "name"); ok {
		s.Name = v
	}
	if v, ok := str(a, "network"); ok {
		s.Network = v
	}
	if v, ok := str(a, "mask"); ok {
		s.Mask = v
	}
	if _, ok := a["bmc_id"]; ok {
		s.BMC = num(a, "bmc_id")
	}
	if _, ok := a["organization_ids"]; ok {
		s.Orgs = ids(a, "organization_ids")
	}
	if _, ok := a["location_ids"]; ok {
		s.Locs = ids(a, "location_ids")
	}
	errs, full := map[string][]string{}, []string(nil)
	add := func(attr, msg, fullMsg string) {
		errs[attr] = append(errs[attr], msg)
		full = append(full, fullMsg)
	}
	if s.Name == "" {
		add("name", "can't be blank", "Name can't be blank")
	} else if taken(f.subnets, id, s.Name, func(v *subnet) string { return v.Name }) {
		add("name", "has already been taken", "Name has already been taken")
	}
	if s.Network == "" {
		add("network", "can't be blank", "Network address can't be blank")
	}
	if s.Mask == "" {
		add("mask", "can't be blank", "Network prefix can't be blank")
	}
	if _, ok := f.proxies[s.BMC]; s.BMC != 0 && !ok {
		add("bmc_id", "is invalid", "Bmc is invalid")
	}
	if len(full) > 0 {
		invalid(w, nilID(id), errs, full)
		return false
	}
	return true
}
