package smartproxy

import (
	"context"
	"net/http"
	"slices"
	"strings"

	"github.com/malleable-cloud/malleable/appliance/broker/brokerapi"
	"github.com/malleable-cloud/malleable/appliance/httpx"
)

// The root module (theforeman/smart-proxy modules/root): which modules run
// and their versions. /features and /version need no authorization;
// /v2/features needs a trusted client.

// advertised lists the modules a proxy configured by cfg runs, sorted as
// /features lists them: m2 only when [m2] is enabled here and the
// appliance's M2 backend is on.
func advertised(cfg Config, id brokerapi.Identity) []string {
	if cfg.M2.Enabled && id.Features.M2 {
		return []string{"bmc", "m2"}
	}
	return []string{"bmc"}
}

// modules lists the running modules, asking the broker (briefly cached)
// whether the appliance's M2 is on.
func (s *Server) modules(ctx context.Context) ([]string, error) {
	id, err := s.identity(ctx)
	if err != nil {
		return nil, err
	}
	return advertised(s.cfg, id), nil
}

// serveRoot answers the root app: GET /features and GET /version;
// everything else is not found.
func (s *Server) serveRoot(w http.ResponseWriter, r *http.Request) {
	if !isGet(r) || (r.URL.Path != "/features" && r.URL.Path != "/version") {
		notFound(w)
		return
	}
	mods, err := s.modules(r.Context())
	if err != nil {
		s.brokerUnknown(w, r, err)
		return
	}
	if r.URL.Path == "/features" {
		writeJSON(w, http.StatusOK, mods)
		return
	}
	v := strings.TrimSuffix(s.version, "-develop")
	vs := map[string]string{}
	for _, m := range mods {
		vs[m] = v
	}
	writeJSON(w, http.StatusOK, struct {
		Version string            `json:"version"`
		Modules map[string]string `json:"modules"`
	}{s.version, vs})
}

// brokerUnknown answers a features request the broker could not be asked
// about: 503, the reason in the body and the log.
func (s *Server) brokerUnknown(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Warn("features unknown", "path", r.URL.Path, "err", err)
	writeBody(w, http.StatusServiceUnavailable, "application/json", []byte(err.Error()))
}

// featureV2 is one module in /v2/features, its keys in the Ruby proxy's
// order.
type featureV2 struct {
	HTTPEnabled  bool              `json:"http_enabled"`
	HTTPSEnabled bool              `json:"https_enabled"`
	Settings     map[string]string `json:"settings"`
	State        string            `json:"state"`
	Capabilities []string          `json:"capabilities"`
}

// serveV2 answers the v2 root app mounted at /v2: GET /v2/features, behind
// the trusted-hosts and client-certificate filters.
func (s *Server) serveV2(w http.ResponseWriter, r *http.Request, rest string) {
	if msg := s.authorize(r, rest); msg != "" {
		s.refuse(w, r, msg)
		return
	}
	if !isGet(r) || rest != "/features" {
		notFound(w)
		return
	}
	mods, err := s.modules(r.Context())
	if err != nil {
		s.brokerUnknown(w, r, err)
		return
	}
	httpOn, httpsOn := s.cfg.Proxy.HTTPListen != "", s.cfg.Proxy.HTTPSListen != ""
	out := map[string]featureV2{
		// Every provider name Foreman may send maps to the broker.
		"bmc": {httpOn, httpsOn, map[string]string{"bmc_default_provider": "ipmitool"}, "running",
			[]string{"freeipmi", "ipmitool", "redfish"}},
	}
	if slices.Contains(mods, "m2") {
		out["m2"] = featureV2{httpOn, httpsOn, map[string]string{}, "running",
			[]string{"attach", "boot_script", "create_disk", "images", "iscsi_target", "snapshots"}}
	}
	writeJSON(w, http.StatusOK, out)
}

// refuse answers a request the authorization filters stopped: 403 with the
// Ruby proxy's plain-text message.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, msg string) {
	hint := "the client's verified reverse DNS name must be in [smart_proxy] trusted_hosts"
	if r.TLS != nil {
		hint = "the client must present a certificate from [smart_proxy] ssl_ca_file whose CN is in [smart_proxy] trusted_hosts"
	}
	s.log.Warn("request refused", "method", r.Method, "path", httpx.RedactPath(r.URL.Path), "remote", r.RemoteAddr, "why", msg, "hint", hint)
	writeHalt(w, r, &halt{http.StatusForbidden, msg})
}
