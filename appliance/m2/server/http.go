package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/gorilla/mux"

	"github.com/malleable-cloud/malleable/appliance/httpx"
	"github.com/malleable-cloud/malleable/appliance/m2"
)

// Prefix is where the M2 API is mounted.
const Prefix = "/m2/v1"

// Caller is who makes a request: an admin, who may act on every project
// and on golden images, or one project's credential.
type Caller struct {
	Admin   bool
	Project string
}

// HandlerConfig is what Handler needs.
type HandlerConfig struct {
	Backend *Backend
	// Authorize identifies the caller of every route but /boot/{token}.
	Authorize func(r *http.Request) (Caller, bool)
	// BootAllowed, if set, is asked before a boot script is served by
	// token: the appliance refuses nodes no longer leased to the project.
	BootAllowed func(ctx context.Context, project, node string) error
	// AttachAllowed, if set, is asked before a project's disk is attached
	// to a node: the appliance requires the node to be held by the project.
	AttachAllowed func(ctx context.Context, project, node string) error
	// Audit, if set, is told of every mutation once it is answered,
	// refused or not: action such as "disk.attach", target such as
	// "disk/acme/web", detail, and the error status and error (0 and nil
	// on success).
	Audit func(r *http.Request, a AuditRecord)
	// Timeouts bound the routes that move volumes' data; zero fields take
	// DefaultTimeout.
	Timeouts Timeouts
	Logger   *slog.Logger
}

// AuditRecord is one M2 mutation as the audit log records it.
type AuditRecord struct {
	Action, Target, Detail string
	// Status is the error status answered; 0 on success.
	Status int
	Err    error
}

// Handler returns the M2 API: images (admin), a project's disks and
// snapshots (its own only), attach/detach, and boot scripts.
func Handler(c HandlerConfig) http.Handler {
	r := mux.NewRouter()
	Register(r, c)
	rs := httpx.Responder{Log: c.Logger}
	r.NotFoundHandler = rs.NotFound()
	r.MethodNotAllowedHandler = rs.MethodNotAllowed()
	return r
}

// Register adds the M2 API's routes, under Prefix, to r.
func Register(r *mux.Router, c HandlerConfig) {
	h := &handler{HandlerConfig: c}
	if h.Logger == nil {
		h.Logger = slog.New(slog.DiscardHandler)
	}
	h.rs = httpx.Responder{Log: h.Logger, Classify: h.classify}
	h.Timeouts = h.Timeouts.orDefaults()
	add := func(method, path string, fn handlerFunc, rt route) {
		r.Handle(Prefix+path, h.wrap(fn, rt)).Methods(method)
	}
	add(http.MethodGet, "/images", h.listImages, route{})
	add(http.MethodPost, "/images", h.importImageFile, route{admin: true, action: "image.import", long: longWork})
	add(http.MethodPut, "/images/{image}", h.uploadImage, route{admin: true, action: "image.upload", long: longUpload})
	add(http.MethodGet, "/images/{image}", h.getImage, route{})
	add(http.MethodDelete, "/images/{image}", h.removeImage, route{admin: true, action: "image.rm"})
	add(http.MethodGet, "/projects/{project}/disks", h.listDisks, route{})
	add(http.MethodPost, "/projects/{project}/disks", h.createDisk, route{action: "disk.create", long: longWork})
	add(http.MethodGet, "/projects/{project}/disks/{disk}", h.getDisk, route{})
	add(http.MethodDelete, "/projects/{project}/disks/{disk}", h.deleteDisk, route{action: "disk.rm"})
	add(http.MethodPost, "/projects/{project}/disks/{disk}/attach", h.attach, route{action: "disk.attach"})
	add(http.MethodPost, "/projects/{project}/disks/{disk}/detach", h.detach, route{action: "disk.detach"})
	add(http.MethodGet, "/projects/{project}/disks/{disk}/boot.ipxe", h.diskBootScript, route{})
	add(http.MethodPost, "/projects/{project}/disks/{disk}/snapshots", h.createSnapshot, route{action: "snapshot.create", long: longWork})
	add(http.MethodGet, "/projects/{project}/snapshots", h.listSnapshots, route{})
	add(http.MethodDelete, "/projects/{project}/snapshots/{snapshot}", h.removeSnapshot, route{action: "snapshot.rm"})
	r.Handle(Prefix+"/boot/{token}", http.HandlerFunc(h.bootByToken)).Methods(http.MethodGet)
}

// route is how wrap treats a route.
type route struct {
	admin  bool   // golden images: admins only
	action string // the audit action of a mutation; "" for reads
	long   longKind
}

// call is one request as a handler sees it: who asks, and what a
// mutation acts on, for the audit log.
type call struct {
	Caller
	target, detail string
}

type handlerFunc func(http.ResponseWriter, *http.Request, *call) error

type handler struct {
	HandlerConfig
	rs httpx.Responder
}

var errForbidden = errors.New("forbidden")

func (h *handler) wrap(fn handlerFunc, rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h.Backend == nil {
			httpx.WriteError(w, httpx.Errorf(http.StatusServiceUnavailable, "M2 storage is not enabled ([m2] enabled)"))
			return
		}
		caller, ok := h.Authorize(r)
		if !ok {
			httpx.WriteError(w, httpx.Errorf(http.StatusUnauthorized, "missing or invalid credentials"))
			return
		}
		if rt.long != 0 {
			var done func()
			r, done = h.deadlines(w, r, rt.long == longUpload)
			defer done()
		}
		c := &call{Caller: caller, target: targetOf(mux.Vars(r))}
		var err error
		switch p, scoped := mux.Vars(r)["project"]; {
		case rt.admin && !c.Admin:
			err = fmt.Errorf("%w: golden images are managed by admins only", errForbidden)
		case scoped && !c.Admin && p != c.Project:
			// A project sees only its own disks: another project's look
			// exactly like ones that do not exist.
			err = fmt.Errorf("project %q: %w", p, m2.ErrNotFound)
		case scoped:
			err = m2.ValidateProject(p)
		}
		if err == nil {
			err = fn(w, r, c)
		}
		status := 0
		if err != nil {
			status = h.rs.Answer(w, r, err)
		}
		if rt.action != "" && h.Audit != nil {
			h.Audit(r, AuditRecord{Action: rt.action, Target: c.target, Detail: c.detail, Status: status, Err: err})
		}
	})
}

// targetOf names what a request acts on from its path, for the audit log.
func targetOf(v map[string]string) string {
	switch {
	case v["image"] != "":
		return "image/" + auditName(v["image"])
	case v["snapshot"] != "":
		return "snapshot/" + auditName(v["project"]) + "/" + auditName(v["snapshot"])
	case v["disk"] != "":
		return "disk/" + auditName(v["project"]) + "/" + auditName(v["disk"])
	case v["project"] != "":
		return "project/" + auditName(v["project"])
	}
	return ""
}

// auditName is a name as the audit log may record it: a refused
// request's name can be anything, so only plain names go in verbatim.
func auditName(s string) string {
	if len(s) == 0 || len(s) > 64 || strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	}) {
		return "(invalid name)"
	}
	return s
}

// classify maps M2's domain errors to their answers: a refusal carries
// the whole error as its message; failures other than a missed deadline
// are left to the Responder (500, logged once).
func (h *handler) classify(err error) *httpx.Error {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, errForbidden):
		status = http.StatusForbidden
	case errors.Is(err, m2.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, m2.ErrExists), errors.Is(err, m2.ErrInUse):
		status = http.StatusConflict
	case errors.Is(err, m2.ErrInvalid), errors.Is(err, errBadRequest):
		status = http.StatusBadRequest
	case errors.Is(err, errTransferTimeout):
		status = http.StatusRequestTimeout
	case errors.Is(err, context.DeadlineExceeded):
		return httpx.Errorf(http.StatusGatewayTimeout, "not finished within the operation deadline of %s; nothing was kept", h.Timeouts.Operation)
	default:
		return nil
	}
	return &httpx.Error{Status: status, Message: err.Error()}
}

var errBadRequest = errors.New("bad request")

// maxBody bounds a JSON request body of the M2 API.
const maxBody = 64 << 10

func (h *handler) listImages(w http.ResponseWriter, r *http.Request, c *call) error {
	imgs, err := h.Backend.Images(r.Context())
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, imgs)
	return nil
}

func (h *handler) getImage(w http.ResponseWriter, r *http.Request, c *call) error {
	img, err := h.Backend.Image(r.Context(), mux.Vars(r)["image"])
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, img)
	return nil
}

// importImageFile imports a golden image from a file on the server.
func (h *handler) importImageFile(w http.ResponseWriter, r *http.Request, c *call) error {
	var req struct {
		Name string `json:"name"`
		Path string `json:"path"`
	}
	if err := httpx.DecodeJSON(w, r, &req, maxBody); err != nil {
		return err
	}
	c.target, c.detail = "image/"+auditName(req.Name), "from a file on the appliance"
	if req.Path == "" || !strings.HasPrefix(req.Path, "/") {
		return fmt.Errorf("%w: path must be an absolute path of a file on the appliance", errBadRequest)
	}
	img, err := h.Backend.ImportImage(r.Context(), req.Name, nil, 0, req.Path)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusCreated, img)
	return nil
}

// uploadImage streams a golden image in the request body.
func (h *handler) uploadImage(w http.ResponseWriter, r *http.Request, c *call) error {
	if r.ContentLength < 0 {
		return fmt.Errorf("%w: Content-Length is required", errBadRequest)
	}
	c.detail = fmt.Sprintf("upload of %d bytes", r.ContentLength)
	img, err := h.Backend.ImportImage(r.Context(), mux.Vars(r)["image"], r.Body, r.ContentLength, "")
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusCreated, img)
	return nil
}

func (h *handler) removeImage(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := h.Backend.RemoveImage(r.Context(), mux.Vars(r)["image"]); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *handler) listDisks(w http.ResponseWriter, r *http.Request, c *call) error {
	ds, err := h.Backend.Disks(r.Context(), mux.Vars(r)["project"])
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, ds)
	return nil
}

// createDisk is create_disk: a clone of an image or snapshot, presented as
// an iSCSI target.
func (h *handler) createDisk(w http.ResponseWriter, r *http.Request, c *call) error {
	var req struct {
		Name     string `json:"name"`
		Image    string `json:"image"`
		Snapshot string `json:"snapshot"`
	}
	if err := httpx.DecodeJSON(w, r, &req, maxBody); err != nil {
		return err
	}
	c.target = targetOf(map[string]string{"project": mux.Vars(r)["project"], "disk": req.Name})
	source := "image:" + req.Image
	switch {
	case (req.Image == "") == (req.Snapshot == ""):
		return fmt.Errorf("%w: give exactly one of image or snapshot", errBadRequest)
	case req.Snapshot != "":
		source = "snapshot:" + req.Snapshot
	}
	c.detail = "from " + auditName(strings.TrimPrefix(strings.TrimPrefix(source, "image:"), "snapshot:"))
	d, err := h.Backend.CreateDisk(r.Context(), mux.Vars(r)["project"], req.Name, source)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusCreated, d)
	return nil
}

func (h *handler) getDisk(w http.ResponseWriter, r *http.Request, c *call) error {
	v := mux.Vars(r)
	d, err := h.Backend.Disk(r.Context(), v["project"], v["disk"])
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, d)
	return nil
}

func (h *handler) deleteDisk(w http.ResponseWriter, r *http.Request, c *call) error {
	v := mux.Vars(r)
	if err := h.Backend.DeleteDisk(r.Context(), v["project"], v["disk"]); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *handler) attach(w http.ResponseWriter, r *http.Request, c *call) error {
	var req struct {
		Node string `json:"node"`
	}
	if err := httpx.DecodeJSON(w, r, &req, maxBody); err != nil {
		return err
	}
	v := mux.Vars(r)
	c.detail = "to node " + auditName(req.Node)
	if h.AttachAllowed != nil {
		if err := h.AttachAllowed(r.Context(), v["project"], req.Node); err != nil {
			return fmt.Errorf("%w: %v", errForbidden, err)
		}
	}
	a, err := h.Backend.Attach(r.Context(), v["project"], v["disk"], req.Node)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, a)
	return nil
}

func (h *handler) detach(w http.ResponseWriter, r *http.Request, c *call) error {
	v := mux.Vars(r)
	if err := h.Backend.Detach(r.Context(), v["project"], v["disk"]); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *handler) diskBootScript(w http.ResponseWriter, r *http.Request, c *call) error {
	v := mux.Vars(r)
	s, err := h.Backend.DiskBootScript(r.Context(), v["project"], v["disk"])
	if err != nil {
		return err
	}
	writeScript(w, s)
	return nil
}

// bootByToken serves a node's boot script to whoever bears its boot token:
// an iPXE node has no other credential. The token is unguessable, rotates
// with every attach, and dies on detach.
func (h *handler) bootByToken(w http.ResponseWriter, r *http.Request) {
	if h.Backend == nil {
		httpx.WriteError(w, httpx.Errorf(http.StatusNotFound, "no boot script for this token"))
		return
	}
	s, project, node, err := h.Backend.BootScript(r.Context(), mux.Vars(r)["token"])
	if err == nil && h.BootAllowed != nil {
		err = h.BootAllowed(r.Context(), project, node)
	}
	if err != nil {
		if h.rs.Resolve(err).Status >= 500 {
			h.Logger.Error("boot script failed", "err", err)
		}
		// One answer for every refusal: a token prober learns nothing.
		httpx.WriteError(w, httpx.Errorf(http.StatusNotFound, "no boot script for this token"))
		return
	}
	writeScript(w, s)
}

func writeScript(w http.ResponseWriter, s []byte) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(s)))
	w.Write(s)
}

func (h *handler) createSnapshot(w http.ResponseWriter, r *http.Request, c *call) error {
	var req struct {
		Name string `json:"name"`
	}
	if err := httpx.DecodeJSON(w, r, &req, maxBody); err != nil {
		return err
	}
	v := mux.Vars(r)
	c.target = targetOf(map[string]string{"project": v["project"], "snapshot": req.Name})
	c.detail = "of disk " + auditName(v["disk"])
	s, err := h.Backend.CreateSnapshot(r.Context(), v["project"], v["disk"], req.Name)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusCreated, s)
	return nil
}

func (h *handler) listSnapshots(w http.ResponseWriter, r *http.Request, c *call) error {
	ss, err := h.Backend.Snapshots(r.Context(), mux.Vars(r)["project"])
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, ss)
	return nil
}

func (h *handler) removeSnapshot(w http.ResponseWriter, r *http.Request, c *call) error {
	v := mux.Vars(r)
	if err := h.Backend.RemoveSnapshot(r.Context(), v["project"], v["snapshot"]); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
