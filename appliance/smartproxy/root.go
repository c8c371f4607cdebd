package smartproxy

import (
	"net/http"
	"strings"
)

// The root module (theforeman/smart-proxy modules/root): which modules run
// and their versions. /features and /version need no authorization;
// /v2/features needs a trusted client.

// modules lists the running modules, sorted as /features lists them.
func (s *Server) modules() []string {
	if s.cfg.M2.Enabled {
		return []string{"bmc", "m2"}
	}
	return []string{"bmc"}
}

// serveRoot answers the root app: GET /features and GET /version;
// everything else is not found.
func (s *Server) serveRoot(w http.ResponseWriter, r *http.Request) {
	switch {
	case isGet(r) && r.URL.Path == "/features":
		writeJSON(w, http.StatusOK, s.modules())
	case isGet(r) && r.URL.Path == "/version":
		v := strings.TrimSuffix(s.version, "-develop")
		mods := map[string]string{}
		for _, m := range s.modules() {
			mods[m] = v
		}
		writeJSON(w, http.StatusOK, struct {
			Version string            `json:"version"`
			Modules map[string]string `json:"modules"`
		}{s.version, mods})
	default:
		notFound(w)
	}
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
	httpOn, httpsOn := s.cfg.Proxy.HTTPListen != "", s.cfg.Proxy.HTTPSListen != ""
	out := map[string]featureV2{
		// Every provider name Foreman may send maps to the broker.
		"bmc": {httpOn, httpsOn, map[string]string{"bmc_default_provider": "ipmitool"}, "running",
			[]string{"freeipmi", "ipmitool", "redfish"}},
	}
	if s.cfg.M2.Enabled {
		out["m2"] = featureV2{httpOn, httpsOn, map[string]string{}, "running",
			[]string{"attach", "boot_script", "create_disk", "images", "iscsi_target", "snapshots"}}
	}
	writeJSON(w, http.StatusOK, out)
}

// refuse answers a request the authorization filters stopped: 403 with the
// Ruby proxy's plain-text message.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, msg string) {
	hint := "the client's verified reverse DNS name must be in smart_proxy.trusted_hosts"
	if r.TLS != nil {
		hint = "the client must present a certificate from smart_proxy.ssl_ca_file whose CN is in smart_proxy.trusted_hosts"
	}
	s.log.Warn("request refused", "method", r.Method, "path", redactPath(r.URL.Path), "remote", r.RemoteAddr, "why", msg, "hint", hint)
	writeHalt(w, r, &halt{http.StatusForbidden, msg})
}
