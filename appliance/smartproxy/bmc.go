package smartproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/malleable-cloud/malleable/appliance/httpx"
)

// The BMC module, mounted at /bmc: theforeman/smart-proxy's
// modules/bmc/bmc_api.rb, route for route, with the broker as its only
// provider. :host is the BMC address Foreman stores on the host's BMC
// interface; it goes to the broker as the node reference. The HTTP Basic
// credentials are the tenant's virtual BMC identity: checked here, never
// forwarded.

// bmcProviders are the provider names accepted (and ignored: every one
// is the broker).
var bmcProviders = []string{"freeipmi", "ipmitool", "redfish"}

// maxBody bounds the request bodies the proxy reads.
const maxBody = 64 << 10

// errNotImplemented answers 501 "NotImplementedError", as the Ruby proxy
// does for what its provider cannot do.
var errNotImplemented = errors.New("NotImplementedError")

// serveBMC answers the BMC module: the authorization filters, then
// Content-Type JSON for everything that follows, then the route.
func (s *Server) serveBMC(w http.ResponseWriter, r *http.Request, rest string) {
	if msg := s.authorize(r, rest); msg != "" {
		s.refuse(w, r, msg)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	rt, ok := parseBMCRoute(r, rest)
	if !ok {
		notFound(w)
		return
	}
	if err := s.bmc(w, r, rt); err != nil {
		s.bmcFail(w, r, rt, err)
	}
}

// actionResult is a BMC answer: {"action":...,"result":...}.
type actionResult struct {
	Action string `json:"action"`
	Result any    `json:"result"`
}

func invalidAction(w http.ResponseWriter, format, arg string) error {
	writeJSON(w, http.StatusOK, map[string]string{"error": fmt.Sprintf(format, arg)})
	return nil
}

const (
	notValidAction   = "The action: %s is not a valid action"
	notValidFunction = "The action: %s is not a valid function"
)

// bmc answers a routed BMC request. Hints (routes without their optional
// segment) need no credentials; everything else runs bmcSetup first.
func (s *Server) bmc(w http.ResponseWriter, r *http.Request, rt bmcRoute) error {
	list := func(key string, v ...string) error {
		writeJSON(w, http.StatusOK, map[string][]string{key: v})
		return nil
	}
	put := r.Method == http.MethodPut
	switch rt.kind {
	case "resources":
		return list("available_resources", "providers", "providers/installed", "host")
	case "providers":
		return list("providers", bmcProviders...)
	case "installed":
		return list("installed_providers", bmcProviders...)
	case "hostmsg":
		writeJSON(w, http.StatusOK, map[string]string{"message": "You need to supply the hostname or ip of the actual bmc device"})
		return nil
	case "host":
		return list("actions", "chassis", "lan", "test", "fru", "bmc", "sensors")
	case "chassis":
		return list("actions", "power", "identify", "config")
	}
	if len(rt.args) == 0 && rt.kind != "test" {
		switch {
		case rt.kind == "power" && put:
			return list("actions", powerActions...)
		case rt.kind == "power":
			return list("actions", "on", "off", "status")
		case rt.kind == "lan":
			return list("actions", "ip", "netmask", "mac", "gateway", "snmp", "vlanid", "ipsrc", "print")
		case rt.kind == "identify" && put:
			return list("actions", "on", "off")
		case rt.kind == "identify":
			return list("actions", "status")
		case rt.kind == "config" && put:
			return list("functions", "bootdevice")
		case rt.kind == "config":
			return list("functions", "bootdevices")
		case rt.kind == "fru":
			return list("actions", "list", "serial", "manufacturer", "model", "asset_tag")
		case rt.kind == "bmc" && put:
			return list("actions", "reset")
		case rt.kind == "bmc":
			return list("actions", "info", "guid", "version")
		case rt.kind == "sensors":
			return list("actions", "list", "count", "names", "fanlist", "templist", "get")
		}
	}
	c, err := s.bmcSetup(r, rt.host)
	if err != nil {
		return err
	}
	arg := rt.arg(0)
	switch rt.kind {
	case "test":
		writeJSON(w, http.StatusOK, actionResult{"test", c.test(r.Context())})
		return nil
	case "power":
		if put {
			return c.powerAction(w, r, arg)
		}
		return c.powerQuery(w, r, arg)
	case "lan":
		return c.lan(w, arg)
	case "identify":
		switch {
		case !put && arg == "status", put && (arg == "on" || arg == "off"):
			return errNotImplemented
		case put:
			// The Ruby proxy names the unset :function here.
			return invalidAction(w, notValidFunction, "")
		}
		return invalidAction(w, notValidAction, arg)
	case "config":
		return c.config(w, r, put, arg, rt.arg(1))
	case "fru", "bmc", "sensors":
		valid := map[string][]string{
			"fru":     {"list", "serial", "manufacturer", "model", "asset_tag"},
			"bmc":     {"info", "guid", "version"},
			"sensors": {"list", "count", "names", "fanlist", "templist", "get"},
		}[rt.kind]
		if put {
			valid = []string{"reset"}
		}
		if slices.Contains(valid, arg) {
			return errNotImplemented
		}
		return invalidAction(w, notValidAction, arg)
	}
	return fmt.Errorf("bmc route %q has no handler", rt.kind) // unreachable: every kind is above
}

// bmcCall is one BMC operation for :host, after bmc_setup.
type bmcCall struct {
	s    *Server
	host string
	// login is whether the Basic credentials are the tenant's BMC
	// identity; checked where the Ruby proxy would reach the BMC.
	login bool
	form  url.Values
}

// bmcSetup is bmc_setup: a JSON body must be an object (415), and HTTP
// Basic credentials must be present (401). The provider is ignored: the
// broker is the only one.
func (s *Server) bmcSetup(r *http.Request, host string) (*bmcCall, error) {
	if err := checkJSONBody(r); err != nil {
		return nil, err
	}
	if err := r.ParseForm(); err != nil {
		return nil, &halt{http.StatusBadRequest, "invalid query or form body: " + err.Error()}
	}
	user, pass, err := credentials(r)
	if err != nil {
		return nil, err
	}
	return &bmcCall{s: s, host: host, login: s.validBMCLogin(user, pass), form: r.Form}, nil
}

// checkJSONBody is parse_json_body: a body declared as JSON must be a
// JSON object.
func checkJSONBody(r *http.Request) error {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/json" {
		return nil
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return &halt{http.StatusUnsupportedMediaType, "Invalid JSON content in body of request: \n" + err.Error()}
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return &halt{http.StatusUnsupportedMediaType, "Invalid JSON content in body of request: \n" + err.Error()}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &halt{http.StatusUnsupportedMediaType, "Invalid JSON content in body of request: \nunexpected data after the JSON value"}
	}
	if _, ok := v.(map[string]any); !ok {
		return &halt{http.StatusUnsupportedMediaType, "Invalid JSON content in body of request: data must be a hash, not " + rubyClass(v)}
	}
	return nil
}

// rubyClass names a decoded JSON value's Ruby class.
func rubyClass(v any) string {
	switch v := v.(type) {
	case string:
		return "String"
	case []any:
		return "Array"
	case json.Number:
		if strings.ContainsAny(v.String(), ".eE") {
			return "Float"
		}
		return "Integer"
	case bool:
		if v {
			return "TrueClass"
		}
		return "FalseClass"
	}
	return "NilClass"
}

// badLogin is the answer to credentials that are not the tenant's: what a
// BMC refusing a password gives through the Ruby proxy, a 400.
func (c *bmcCall) badLogin() error {
	return &halt{http.StatusBadRequest, fmt.Sprintf("BMC authentication failed for %s: wrong username or password", c.host)}
}

// status reads the node's power as the tenant may see it: "on" only while
// the tenant holds it and it is on. A node the appliance does not know
// for the tenant reads "off" too.
func (c *bmcCall) status(ctx context.Context) (string, error) {
	if !c.login {
		return "", c.badLogin()
	}
	ctx, cancel := context.WithTimeout(ctx, c.s.cfg.Broker.StatusTimeout)
	defer cancel()
	p, err := c.s.broker.PowerStatus(ctx, c.host)
	switch {
	case isNotFound(err):
		return "off", nil
	case err != nil:
		return "", err
	case p.Power == "on":
		return "on", nil
	}
	return "off", nil
}

// test is `GET /:host/test`: whether the proxy can answer for the host.
func (c *bmcCall) test(ctx context.Context) bool {
	if !c.login {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, c.s.cfg.Broker.StatusTimeout)
	defer cancel()
	_, err := c.s.broker.PowerStatus(ctx, c.host)
	if err != nil && !isNotFound(err) {
		c.s.log.Warn("bmc test failed", "host", c.host, "err", err)
	}
	return err == nil
}

func (c *bmcCall) powerQuery(w http.ResponseWriter, r *http.Request, action string) error {
	if action != "status" && action != "on" && action != "off" {
		return invalidAction(w, notValidAction, action)
	}
	st, err := c.status(r.Context())
	if err != nil {
		return err
	}
	var result any = st
	if action != "status" {
		result = st == action
	}
	writeJSON(w, http.StatusOK, actionResult{action, result})
	return nil
}

func (c *bmcCall) powerAction(w http.ResponseWriter, r *http.Request, action string) error {
	if !slices.Contains(powerActions, action) {
		return invalidAction(w, notValidAction, action)
	}
	if !c.login {
		return c.badLogin()
	}
	ctx, cancel := context.WithTimeout(r.Context(), c.s.cfg.Broker.Timeout)
	defer cancel()
	if err := c.s.broker.Power(ctx, c.host, action); err != nil {
		return err
	}
	c.s.log.Info("power action", "host", c.host, "action", action, "request_id", r.Header.Get("X-Request-Id"))
	writeJSON(w, http.StatusOK, actionResult{action, true})
	return nil
}

// lan answers the host's BMC tab in Foreman. The tenant sees no real BMC
// network settings: the address is the one Foreman stored, the rest null
// (what the Ruby proxy answers when the BMC tells nothing).
func (c *bmcCall) lan(w http.ResponseWriter, action string) error {
	switch action {
	case "ip", "netmask", "mac", "gateway":
		var result any
		if c.login && action == "ip" && net.ParseIP(c.host) != nil {
			result = c.host
		}
		writeJSON(w, http.StatusOK, actionResult{action, result})
		return nil
	case "snmp", "vlanid", "ipsrc", "print":
		return errNotImplemented
	}
	return invalidAction(w, notValidAction, action)
}

// config answers chassis/config: the boot devices, and setting one.
func (c *bmcCall) config(w http.ResponseWriter, r *http.Request, put bool, function, action string) error {
	if !put {
		if function != "bootdevices" {
			return invalidAction(w, notValidFunction, function)
		}
		writeJSON(w, http.StatusOK, map[string][]string{"devices": bootDevices})
		return nil
	}
	if function != "bootdevice" {
		return invalidAction(w, notValidFunction, function)
	}
	if action == "" {
		writeJSON(w, http.StatusOK, map[string][]string{"actions": bootDevices,
			"options": {"reboot=true|false", "persistent=true|false"}})
		return nil
	}
	// As the Ruby proxy: the first device the action contains.
	dev := ""
	for _, d := range []string{"pxe", "cdrom", "bios", "disk"} {
		if strings.Contains(action, d) {
			dev = d
			break
		}
	}
	if dev == "" {
		writeJSON(w, http.StatusOK, map[string]string{"error": action + " is not a valid boot device"})
		return nil
	}
	if !c.login {
		return c.badLogin()
	}
	ctx, cancel := context.WithTimeout(r.Context(), c.s.cfg.Broker.Timeout)
	defer cancel()
	if err := c.s.broker.SetBootDevice(ctx, c.host, dev, truthy(c.form.Get("persistent"))); err != nil {
		return err
	}
	if truthy(c.form.Get("reboot")) {
		if err := c.s.broker.Power(ctx, c.host, "cycle"); err != nil {
			return err
		}
	}
	c.s.log.Info("boot device set", "host", c.host, "device", dev, "request_id", r.Header.Get("X-Request-Id"))
	writeJSON(w, http.StatusOK, actionResult{action, true})
	return nil
}

// truthy reads the reboot and persistent parameters. (The Ruby proxy
// takes any string, even "false", as true; Foreman sends neither.)
func truthy(v string) bool {
	switch strings.ToLower(v) {
	case "true", "1", "yes", "on":
		return true
	}
	return false
}

// bmcFail is the one place BMC errors become answers: plain-text bodies
// with the Ruby proxy's status codes (400 for any failure of the
// operation, 501 for what is not implemented).
func (s *Server) bmcFail(w http.ResponseWriter, r *http.Request, rt bmcRoute, err error) {
	var h *halt
	switch {
	case errors.As(err, &h):
		s.log.Debug("bmc request refused", "host", rt.host, "status", h.status, "why", h.msg)
	case errors.Is(err, errNotImplemented):
		h = &halt{http.StatusNotImplemented, "NotImplementedError"}
	default:
		h = &halt{http.StatusBadRequest, s.explain(r, err)}
	}
	writeHalt(w, r, h)
}

// explain turns a broker error into the message a tenant reads, logging
// it once at the level it deserves.
func (s *Server) explain(r *http.Request, err error) string {
	var ae *httpx.StatusError
	switch {
	case errors.As(err, &ae) && ae.Status == http.StatusUnauthorized:
		s.log.Error("the appliance refused this proxy's broker token; check broker.token_file", "err", err)
		return "the appliance refused this smart-proxy's tenant credential"
	case errors.As(err, &ae) && ae.Status < 500:
		s.log.Info("refused by the appliance", "method", r.Method, "path", httpx.RedactPath(r.URL.Path), "status", ae.Status, "why", ae.Message)
		return ae.Message
	case errors.As(err, &ae):
		s.log.Warn("the appliance failed", "method", r.Method, "path", httpx.RedactPath(r.URL.Path), "err", err)
		return ae.Message
	case errors.Is(err, context.DeadlineExceeded):
		s.log.Warn("the appliance did not answer in time", "method", r.Method, "path", httpx.RedactPath(r.URL.Path), "err", err)
		return "the appliance did not answer in time"
	}
	s.log.Warn("the appliance cannot be reached", "method", r.Method, "path", httpx.RedactPath(r.URL.Path), "err", err)
	return "the appliance cannot be reached: " + err.Error()
}
