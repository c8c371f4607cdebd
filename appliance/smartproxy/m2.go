package smartproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/malleable-cloud/malleable/appliance/httpx"
	"github.com/malleable-cloud/malleable/appliance/m2"
)

// The M2 plugin, mounted at /m2: the tenant's golden images, disks
// (create_disk), snapshots, attaching a disk to a host and each host's
// iPXE boot script, all relayed to the appliance's M2 API for the tenant's
// own project; plus the foreman_m2 prototype's routes (test, image_list,
// snapshot_list, iscsi_target) so that plugin works unchanged. Answers are
// JSON, errors {"error": "..."}.

// m2Route is one route below /m2; "{name}" segments are path values.
type m2Route struct {
	method  string
	pattern string
	handle  func(s *Server, w http.ResponseWriter, r *http.Request) error
}

var m2Routes = []m2Route{
	// The foreman_m2 prototype's routes.
	{http.MethodGet, "test", (*Server).m2Test},
	{http.MethodGet, "image_list", (*Server).m2ImageList},
	{http.MethodGet, "snapshot_list", (*Server).m2SnapshotList},
	{http.MethodGet, "iscsi_target", (*Server).m2ISCSITarget},
	{http.MethodDelete, "iscsi_target", (*Server).m2DeleteISCSITarget},
	// Malleable's own.
	{http.MethodGet, "images", (*Server).m2Images},
	{http.MethodGet, "nodes", (*Server).m2Nodes},
	{http.MethodGet, "disks", (*Server).m2Disks},
	{http.MethodPost, "disks", (*Server).m2CreateDisk},
	{http.MethodGet, "disks/{disk}", (*Server).m2Disk},
	{http.MethodDelete, "disks/{disk}", (*Server).m2DeleteDisk},
	{http.MethodPost, "disks/{disk}/attach", (*Server).m2Attach},
	{http.MethodPost, "disks/{disk}/detach", (*Server).m2Detach},
	{http.MethodGet, "disks/{disk}/boot.ipxe", (*Server).m2DiskBootScript},
	{http.MethodPost, "disks/{disk}/snapshots", (*Server).m2CreateSnapshot},
	{http.MethodGet, "snapshots", (*Server).m2Snapshots},
	{http.MethodDelete, "snapshots/{snapshot}", (*Server).m2RemoveSnapshot},
}

// match reports whether segs fit pattern, setting its path values on r.
func match(r *http.Request, pattern string, segs []string) bool {
	ps := strings.Split(pattern, "/")
	if len(ps) != len(segs) {
		return false
	}
	for i, p := range ps {
		if name, ok := strings.CutPrefix(p, "{"); ok {
			if segs[i] == "" {
				return false
			}
			r.SetPathValue(strings.TrimSuffix(name, "}"), segs[i])
		} else if p != segs[i] {
			return false
		}
	}
	return true
}

// bootToken recognizes GET /m2/boot/<token>, the one route open to
// unauthenticated nodes: the token is their credential.
func bootToken(r *http.Request, rest string) (string, bool) {
	segs, ok := segments(rest)
	if !ok || !isGet(r) || len(segs) != 2 || segs[0] != "boot" || segs[1] == "" {
		return "", false
	}
	return segs[1], true
}

// serveM2 answers the M2 plugin: boot scripts by token, then everything
// else behind the same filters as /bmc.
func (s *Server) serveM2(w http.ResponseWriter, r *http.Request, rest string) {
	if token, ok := bootToken(r, rest); ok {
		s.m2Do(w, r, func(r *http.Request) error { return s.m2Boot(w, r, token) })
		return
	}
	if msg := s.authorize(r, rest); msg != "" {
		s.log.Warn("request refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "why", msg,
			"hint", "see smart_proxy.trusted_hosts and ssl_ca_file")
		writeJSONError(w, http.StatusForbidden, msg)
		return
	}
	segs, ok := segments(rest)
	if !ok {
		writeJSONError(w, http.StatusNotFound, "no such route")
		return
	}
	var allow []string
	for _, rt := range m2Routes {
		if !match(r, rt.pattern, segs) {
			continue
		}
		if rt.method == r.Method || (rt.method == http.MethodGet && r.Method == http.MethodHead) {
			r.Body = http.MaxBytesReader(w, r.Body, maxBody)
			s.m2Do(w, r, func(r *http.Request) error { return rt.handle(s, w, r) })
			return
		}
		allow = append(allow, rt.method)
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeJSONError(w, http.StatusMethodNotAllowed, "method not allowed on this route")
		return
	}
	writeJSONError(w, http.StatusNotFound, "no such route")
}

// m2Do runs an M2 handler with the calls' deadline, and is the one place
// its errors become answers: the proxy's own refusals keep their status,
// the appliance's 4xx are relayed, its failures are 502, a timeout 504.
func (s *Server) m2Do(w http.ResponseWriter, r *http.Request, fn func(*http.Request) error) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.Broker.Timeout)
	defer cancel()
	r = r.WithContext(ctx)
	err := fn(r)
	if err == nil {
		return
	}
	var h *halt
	var ae *httpx.StatusError
	switch {
	case errors.As(err, &h):
		writeJSONError(w, h.status, h.msg)
	case errors.As(err, &ae) && ae.Status != http.StatusUnauthorized && ae.Status < 500:
		s.log.Info("refused by the appliance", "method", r.Method, "path", httpx.RedactPath(r.URL.Path), "status", ae.Status, "why", ae.Message)
		writeJSONError(w, ae.Status, ae.Message)
	case errors.Is(err, context.DeadlineExceeded):
		writeJSONError(w, http.StatusGatewayTimeout, s.explain(r, err))
	default:
		writeJSONError(w, http.StatusBadGateway, s.explain(r, err))
	}
}

// project is the M2 project a request acts on: the tenant's, unless a
// prototype route names one (which the appliance refuses if it is not
// the tenant's).
func (s *Server) project(r *http.Request) (string, error) {
	if p := r.URL.Query().Get("project"); p != "" {
		return p, nil
	}
	return s.tenantName(r.Context())
}

func writeText(w http.ResponseWriter, status int, text string) {
	w.Header().Set("Cache-Control", "no-store")
	writeBody(w, status, "text/plain; charset=utf-8", []byte(text))
}

func (s *Server) m2Images(w http.ResponseWriter, r *http.Request) error {
	imgs, err := s.storage.Images(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, nonNil(imgs))
	return nil
}

// m2Nodes lists the tenant's active and upcoming leases: the hosts a disk
// may be attached to.
func (s *Server) m2Nodes(w http.ResponseWriter, r *http.Request) error {
	ls, err := s.broker.Nodes(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, nonNil(ls))
	return nil
}

func (s *Server) m2Disks(w http.ResponseWriter, r *http.Request) error {
	p, err := s.tenantName(r.Context())
	if err != nil {
		return err
	}
	ds, err := s.storage.Disks(r.Context(), p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, nonNil(ds))
	return nil
}

// m2CreateDisk is create_disk: {"name", "image"} or {"name", "snapshot"}.
func (s *Server) m2CreateDisk(w http.ResponseWriter, r *http.Request) error {
	f, err := bodyFields(r, "name", "image", "snapshot")
	if err != nil {
		return err
	}
	p, err := s.tenantName(r.Context())
	if err != nil {
		return err
	}
	d, err := s.storage.CreateDisk(r.Context(), p, f["name"], f["image"], f["snapshot"])
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, d)
	return nil
}

func (s *Server) m2Disk(w http.ResponseWriter, r *http.Request) error {
	p, err := s.tenantName(r.Context())
	if err != nil {
		return err
	}
	d, err := s.storage.Disk(r.Context(), p, r.PathValue("disk"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

func (s *Server) m2DeleteDisk(w http.ResponseWriter, r *http.Request) error {
	p, err := s.tenantName(r.Context())
	if err != nil {
		return err
	}
	if err := s.storage.DeleteDisk(r.Context(), p, r.PathValue("disk")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// attachment is an attach answer: the boot token, and where the node
// fetches its boot script when boot_url is configured.
type attachment struct {
	m2.Attachment
	BootURL string `json:"boot_url,omitempty"`
}

// m2Attach attaches a disk to a host, named as Foreman knows it: node
// name, BMC address or MAC. The appliance refuses a node the tenant does
// not hold now.
func (s *Server) m2Attach(w http.ResponseWriter, r *http.Request) error {
	f, err := bodyFields(r, "node")
	if err != nil {
		return err
	}
	if f["node"] == "" {
		return &halt{http.StatusBadRequest, "node: the host to attach the disk to is required"}
	}
	p, err := s.tenantName(r.Context())
	if err != nil {
		return err
	}
	node, err := s.nodeName(r.Context(), f["node"])
	if err != nil {
		return err
	}
	a, err := s.storage.Attach(r.Context(), p, r.PathValue("disk"), node)
	if err != nil {
		return err
	}
	out := attachment{Attachment: a}
	if s.cfg.M2.BootURL != "" {
		out.BootURL = strings.TrimRight(s.cfg.M2.BootURL, "/") + "/m2/boot/" + a.BootToken
	}
	s.log.Info("disk attached", "disk", a.Disk, "node", a.Node, "request_id", r.Header.Get("X-Request-Id"))
	writeJSON(w, http.StatusOK, out)
	return nil
}

// nodeName resolves a host reference among the tenant's leases; one it
// does not find is passed on as it is, for the appliance to judge.
func (s *Server) nodeName(ctx context.Context, ref string) (string, error) {
	ls, err := s.broker.Nodes(ctx)
	if err != nil {
		return "", err
	}
	for _, l := range ls {
		if l.Node == ref || (l.BMCAddress != "" && l.BMCAddress == ref) || slices.ContainsFunc(l.MACs, func(m string) bool { return strings.EqualFold(m, ref) }) {
			return l.Node, nil
		}
	}
	return ref, nil
}

func (s *Server) m2Detach(w http.ResponseWriter, r *http.Request) error {
	p, err := s.tenantName(r.Context())
	if err != nil {
		return err
	}
	if err := s.storage.Detach(r.Context(), p, r.PathValue("disk")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// m2DiskBootScript is an attached disk's iPXE script, for the tenant's
// Foreman (which may render it into a host's template).
func (s *Server) m2DiskBootScript(w http.ResponseWriter, r *http.Request) error {
	p, err := s.tenantName(r.Context())
	if err != nil {
		return err
	}
	b, err := s.storage.DiskBootScript(r.Context(), p, r.PathValue("disk"))
	if err != nil {
		return err
	}
	writeText(w, http.StatusOK, string(b))
	return nil
}

var bootTokenRE = regexp.MustCompile(`^[A-Za-z0-9_-]{16,256}$`)

// m2Boot relays a node's boot script, fetched by its per-attach token.
// The appliance serves it only while the node is held by the disk's
// tenant; the proxy adds nothing but the relay.
func (s *Server) m2Boot(w http.ResponseWriter, r *http.Request, token string) error {
	if !bootTokenRE.MatchString(token) {
		return &halt{http.StatusNotFound, "no boot script for this token"}
	}
	b, err := s.storage.BootScript(r.Context(), token)
	if err != nil {
		return err
	}
	writeText(w, http.StatusOK, string(b))
	return nil
}

func (s *Server) m2CreateSnapshot(w http.ResponseWriter, r *http.Request) error {
	f, err := bodyFields(r, "name")
	if err != nil {
		return err
	}
	p, err := s.tenantName(r.Context())
	if err != nil {
		return err
	}
	sn, err := s.storage.CreateSnapshot(r.Context(), p, r.PathValue("disk"), f["name"])
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, sn)
	return nil
}

func (s *Server) m2Snapshots(w http.ResponseWriter, r *http.Request) error {
	p, err := s.tenantName(r.Context())
	if err != nil {
		return err
	}
	ss, err := s.storage.Snapshots(r.Context(), p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, nonNil(ss))
	return nil
}

func (s *Server) m2RemoveSnapshot(w http.ResponseWriter, r *http.Request) error {
	p, err := s.tenantName(r.Context())
	if err != nil {
		return err
	}
	if err := s.storage.RemoveSnapshot(r.Context(), p, r.PathValue("snapshot")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// nonNil makes an empty list encode as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// bodyFields reads a JSON object of strings or a form body, accepting
// only the named fields. An absent body has no fields.
func bodyFields(r *http.Request, allowed ...string) (map[string]string, error) {
	out := map[string]string{}
	ct := r.Header.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	switch {
	case mt == "application/x-www-form-urlencoded":
		if err := r.ParseForm(); err != nil {
			return nil, &halt{http.StatusBadRequest, "body: " + err.Error()}
		}
		for k, v := range r.PostForm {
			out[k] = v[0]
		}
	case mt == "application/json" || ct == "":
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, &halt{http.StatusRequestEntityTooLarge, fmt.Sprintf("body is larger than %d bytes", maxBody)}
		}
		if len(strings.TrimSpace(string(b))) == 0 {
			break
		}
		dec := json.NewDecoder(strings.NewReader(string(b)))
		var m map[string]any
		if err := dec.Decode(&m); err != nil || m == nil {
			return nil, &halt{http.StatusBadRequest, "body: a JSON object of strings is required"}
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return nil, &halt{http.StatusBadRequest, "body: unexpected data after the JSON object"}
		}
		for k, v := range m {
			str, ok := v.(string)
			if !ok {
				return nil, &halt{http.StatusBadRequest, fmt.Sprintf("%s: must be a JSON string", k)}
			}
			out[k] = str
		}
	default:
		return nil, &halt{http.StatusUnsupportedMediaType, "body must be application/json or application/x-www-form-urlencoded"}
	}
	for k := range out {
		if !slices.Contains(allowed, k) {
			return nil, &halt{http.StatusBadRequest, fmt.Sprintf("%s: unknown field (known: %s)", k, strings.Join(allowed, ", "))}
		}
	}
	return out, nil
}
