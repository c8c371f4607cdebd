package hil

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/malleable-cloud/malleable/appliance/allocator/node"
)

// ClientConfig configures a Client.
type ClientConfig struct {
	// Endpoint is HIL's base URL, http(s)://host:port with an optional path
	// prefix, without the /v0 API prefix (the client adds it).
	Endpoint string
	// Username and Password are sent as HTTP Basic credentials (HIL's
	// database auth backend). Leave both empty for HIL's null auth backend.
	// The account must be a HIL administrator (see CheckAdmin): Connect
	// creates projects, a hand-over moves nodes between projects, and only
	// an admin may power off a free node.
	Username, Password string
	// PasswordFile, instead of Password, names a file holding the password.
	// It is read by NewClient and read again before a call whenever its
	// modification time or size changed, so a rotated password takes
	// effect without a restart.
	PasswordFile string
	// HTTPClient carries the requests; nil means a new http.Client. It is
	// copied, not modified: the copy gets this package's redirect policy.
	HTTPClient *http.Client
	// Timeout bounds each plain HIL call; zero means 10s. Callers bound a
	// whole method with ctx.
	Timeout time.Duration
	// OBMTimeout bounds each call that reaches OBMd: power, status, boot
	// device (with their 307 hop) and enabling or disabling an OBM (HIL
	// asks OBMd for a token). OBMd runs one operation at a time and gives
	// up on a BMC that does not answer after about 20 s, so any call may
	// first wait for another node's dead BMC; zero means 60s.
	OBMTimeout time.Duration
	// ActionWait bounds how long Detach waits for one networking action
	// to leave PENDING before it returns node.ErrPending; zero means 30s.
	ActionWait time.Duration
	// Logger receives one debug line per call and warnings; nil discards.
	Logger *slog.Logger
}

// Client speaks to a real HIL server over its REST API (/v0). Power and
// boot-device calls are answered by HIL with 307 redirects to OBMd, which
// the client follows with the request body and without HIL's credentials.
// A Client is safe for concurrent use.
type Client struct {
	base       string // scheme://host[:port][/prefix], no trailing slash
	origin     string // scheme://host[:port] of base
	user       string
	password   *password
	hc         *http.Client
	timeout    time.Duration
	obmTimeout time.Duration
	log        *slog.Logger

	// Networking-action polling: first and longest delay between polls,
	// and how long one action may stay PENDING before HIL's network daemon
	// is presumed stuck. Fields, not constants, so tests can shorten them.
	pollMin, pollMax, actionWait time.Duration
}

const (
	defaultTimeout    = 10 * time.Second
	defaultOBMTimeout = 60 * time.Second // three times OBMd's 20 s per dead BMC
	maxRedirects      = 3                // HIL → OBMd is one hop; allow a proxy's
	maxBody           = 1 << 20          // HIL and OBMd answers are small JSON
)

// NewClient validates c and returns a Client; it makes no request.
func NewClient(c ClientConfig) (*Client, error) {
	u, err := url.Parse(c.Endpoint)
	if ue := (*url.Error)(nil); errors.As(err, &ue) {
		err = ue.Err // *url.Error quotes the endpoint, password included
	}
	switch {
	case err != nil:
		return nil, fmt.Errorf("hil client: %w: endpoint: %w", node.ErrBadArgument, err)
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		return nil, fmt.Errorf("hil client: %w: endpoint %q is not an http(s)://host URL", node.ErrBadArgument, u.Redacted())
	case u.User != nil:
		return nil, fmt.Errorf("hil client: %w: endpoint must not carry credentials; use Username and Password", node.ErrBadArgument)
	case u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("hil client: %w: endpoint %q must not have a query or fragment", node.ErrBadArgument, u.Redacted())
	case strings.HasSuffix(strings.TrimRight(u.Path, "/"), "/v0"):
		return nil, fmt.Errorf("hil client: %w: endpoint %q must not include /v0 (the client adds it)", node.ErrBadArgument, u.Redacted())
	case (c.Password != "" || c.PasswordFile != "") && c.Username == "":
		return nil, fmt.Errorf("hil client: %w: password without username", node.ErrBadArgument)
	case c.Password != "" && c.PasswordFile != "":
		return nil, fmt.Errorf("hil client: %w: both a password and a password file", node.ErrBadArgument)
	case c.Timeout < 0 || c.OBMTimeout < 0 || c.ActionWait < 0:
		return nil, fmt.Errorf("hil client: %w: negative timeout", node.ErrBadArgument)
	}
	cl := &Client{
		origin:     u.Scheme + "://" + u.Host,
		user:       c.Username,
		password:   &password{value: c.Password, path: c.PasswordFile},
		timeout:    cmp.Or(c.Timeout, defaultTimeout),
		obmTimeout: cmp.Or(c.OBMTimeout, defaultOBMTimeout),
		log:        c.Logger,
		pollMin:    250 * time.Millisecond,
		pollMax:    2 * time.Second,
		actionWait: cmp.Or(c.ActionWait, 30*time.Second),
	}
	if _, err := cl.password.get(); err != nil {
		return nil, fmt.Errorf("hil client: %w", err)
	}
	cl.base = cl.origin + strings.TrimRight(u.EscapedPath(), "/")
	if cl.log == nil {
		cl.log = slog.New(slog.DiscardHandler)
	}
	hc := &http.Client{}
	if c.HTTPClient != nil {
		copied := *c.HTTPClient
		hc = &copied
	}
	hc.CheckRedirect = cl.checkRedirect
	cl.hc = hc
	return cl, nil
}

// checkRedirect follows only 307/308 (HIL's hand-off to OBMd, which keeps
// method and body) and removes HIL's Basic credentials from any hop to
// another origin. net/http alone is not enough: it compares host names
// without ports, so it would hand them to an OBMd on HIL's host.
func (c *Client) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects {
		return fmt.Errorf("%w: more than %d redirects", node.ErrBackend, maxRedirects)
	}
	if s := req.Response.StatusCode; s != http.StatusTemporaryRedirect && s != http.StatusPermanentRedirect {
		return http.ErrUseLastResponse // reported as an unexpected status
	}
	if req.URL.Scheme+"://"+req.URL.Host != c.origin {
		req.Header.Del("Authorization")
	}
	return nil
}

// get sends a GET, which never carries a body (HIL answers 400 to one).
func (c *Client) get(ctx context.Context, path string, out any) error {
	return c.do(ctx, http.MethodGet, path, nil, out)
}

// do makes one plain HIL call under the per-call timeout.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	return c.call(ctx, c.timeout, method, path, in, out)
}

// setOBM enables or disables node's OBM; HIL asks OBMd for a token or
// revokes it, so the call waits in OBMd's queue like a power call.
func (c *Client) setOBM(ctx context.Context, node string, enabled bool) error {
	return c.call(ctx, c.obmTimeout, http.MethodPut, nodePath(node)+"/obm", obmArg{Enabled: enabled}, nil)
}

// call makes one HIL call under timeout, following HIL's 307 to OBMd, and
// decodes a successful JSON answer into out when out is non-nil.
func (c *Client) call(parent context.Context, timeout time.Duration, method, path string, in, out any) error {
	pw, err := c.password.get()
	if err != nil {
		return fmt.Errorf("%s /v0%s: %w", method, path, err)
	}
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	path = "/v0" + path
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s %s: encode body: %w", method, path, err)
		}
		// A *bytes.Reader makes http.NewRequest set GetBody, which is what
		// lets net/http resend the body on HIL's 307 to OBMd.
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w: %w", method, path, node.ErrBadArgument, err)
	}
	if in != nil {
		// HIL ignores form-encoded bodies; only this makes it read JSON.
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.user != "" {
		req.SetBasicAuth(c.user, pw)
	}
	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		return transportError(parent, method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	c.log.DebugContext(parent, "hil call", "method", method, "path", path, "status", resp.StatusCode,
		"via_obmd", resp.Request.Response != nil, "duration", time.Since(start))
	if err != nil {
		return transportError(parent, method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return c.newAPIError(method, path, resp, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: %w: decode %d answer: %w", method, path, node.ErrBackend, resp.StatusCode, err)
		}
	}
	return nil
}

// checkName rejects labels that cannot be one path segment of a HIL URL.
// HIL's router splits the decoded path on "/", so a label with a slash
// would address another resource; dot segments would be cleaned away.
// Everything else is escaped with url.PathEscape.
func checkName(kind, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty %s name", node.ErrBadArgument, kind)
	case name == "." || name == "..":
		return fmt.Errorf("%w: %s name %q is a dot segment", node.ErrBadArgument, kind, name)
	case strings.Contains(name, "/"):
		return fmt.Errorf("%w: %s name %q contains a slash", node.ErrBadArgument, kind, name)
	case !utf8.ValidString(name) || strings.IndexFunc(name, unicode.IsControl) >= 0:
		return fmt.Errorf("%w: %s name %q contains control characters or invalid UTF-8", node.ErrBadArgument, kind, name)
	}
	return nil
}

func nodePath(node string) string       { return "/node/" + url.PathEscape(node) }
func projectPath(project string) string { return "/project/" + url.PathEscape(project) }

func checkNames(node, project string) error {
	if err := checkName("node", node); err != nil {
		return err
	}
	return checkName("project", project)
}

// Request bodies. Path parameters never repeat in a body: HIL answers 400.
type (
	nodeArg struct {
		Node string `json:"node"`
	}
	obmArg struct {
		Enabled bool `json:"enabled"`
	}
	networkArg struct {
		Network string `json:"network"`
	}
	cycleArg struct {
		Force bool `json:"force"`
	}
	bootdevArg struct {
		Bootdev string `json:"bootdev"`
	}
)

// hilNode is the part of show_node's answer the client reads.
type hilNode struct {
	Project *string `json:"project"` // null when free
	NICs    []struct {
		Label    string            `json:"label"`
		Networks map[string]string `json:"networks"` // channel → network
	} `json:"nics"`
}

func (c *Client) showNode(ctx context.Context, node string) (hilNode, error) {
	var n hilNode
	err := c.get(ctx, nodePath(node), &n)
	return n, err
}

// NodeProject returns the HIL project node is in, or "" when it is free.
func (c *Client) NodeProject(ctx context.Context, node string) (string, error) {
	if err := checkName("node", node); err != nil {
		return "", fmt.Errorf("show node: %w", err)
	}
	n, err := c.showNode(ctx, node)
	if err != nil {
		return "", fmt.Errorf("show node %s: %w", node, err)
	}
	if n.Project == nil {
		return "", nil
	}
	return *n.Project, nil
}

// Connect puts node in project and enables its OBM so the project can
// drive its power. It creates the project when missing. A node already in
// project is success; a node in another project is node.ErrOwned. Enabling the
// OBM again issues a fresh OBMd token, which is harmless: the client asks
// HIL for a redirect on every power call and never keeps a token.
func (c *Client) Connect(ctx context.Context, node, project string) error {
	if err := checkNames(node, project); err != nil {
		return fmt.Errorf("connect node: %w", err)
	}
	if err := c.connect(ctx, node, project); err != nil {
		return fmt.Errorf("connect node %s to project %s: %w", node, project, err)
	}
	return nil
}

func (c *Client) connect(ctx context.Context, name, project string) error {
	if err := c.ensureProject(ctx, project); err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		err := c.do(ctx, http.MethodPost, projectPath(project)+"/connect_node", nodeArg{name}, nil)
		if err == nil {
			break
		}
		if !errors.Is(err, node.ErrOwned) {
			return err
		}
		// "Node is already owned by a project.": by which one?
		owner, gerr := c.NodeProject(ctx, name)
		if errors.Is(gerr, ErrUnauthorized) {
			// We may use project but may not see the node: another
			// project has it.
			return err
		}
		if gerr != nil {
			return gerr
		}
		if owner == project {
			break
		}
		if owner == "" && attempt == 0 {
			continue // released meanwhile
		}
		return fmt.Errorf("%w (HIL shows project %q)", err, owner)
	}
	return c.setOBM(ctx, name, true)
}

// ensureProject creates project; one that exists is fine. Creating is
// admin-only in HIL: a project member's 401 means the project must already
// exist, which connect_node then settles.
func (c *Client) ensureProject(ctx context.Context, project string) error {
	err := c.do(ctx, http.MethodPut, projectPath(project), nil, nil)
	if e, ok := asAPIError(err); ok {
		switch {
		case e.status == http.StatusConflict && (e.typ == "DuplicateError" || e.typ == ""):
			return nil
		case errors.Is(err, ErrUnauthorized):
			c.log.DebugContext(ctx, "hil: cannot create project, assuming it exists", "project", project, "err", err)
			return nil
		}
	}
	return err
}

// Detach takes node out of project in HIL's hand-over order: detach every
// network (waiting for each networking action), disable the OBM, which
// revokes the OBMd token project used, then detach the node. A free node is
// success; a node in another project is node.ErrOwned. Power the node off first:
// once its OBM is disabled nobody can.
func (c *Client) Detach(ctx context.Context, node, project string) error {
	if err := checkNames(node, project); err != nil {
		return fmt.Errorf("detach node: %w", err)
	}
	if err := c.detach(ctx, node, project); err != nil {
		return fmt.Errorf("detach node %s from project %s: %w", node, project, err)
	}
	return nil
}

func (c *Client) detach(ctx context.Context, name, project string) error {
	n, err := c.showNode(ctx, name)
	if err != nil {
		return err
	}
	switch {
	case n.Project == nil:
		return nil
	case *n.Project != project:
		return fmt.Errorf("%w: HIL shows project %q", node.ErrOwned, *n.Project)
	}
	// One NIC takes one networking action at a time: detach in turn.
	for _, nic := range n.NICs {
		for _, network := range slices.Compact(slices.Sorted(maps.Values(nic.Networks))) {
			if err := c.detachNetwork(ctx, name, nic.Label, network); err != nil {
				return err
			}
		}
	}
	if err := c.setOBM(ctx, name, false); err != nil {
		return err
	}
	err = c.do(ctx, http.MethodPost, projectPath(project)+"/detach_node", nodeArg{name}, nil)
	if e, ok := asAPIError(err); ok && e.status == http.StatusNotFound && e.msg == "Node not in project" {
		return nil // detached by someone else since show_node
	}
	if errors.Is(err, node.ErrPending) {
		return fmt.Errorf("%w; %s", err, daemonHint)
	}
	if e, ok := asAPIError(err); ok && e.status == http.StatusConflict && e.msg == "Node attached to a network" {
		// HIL's network daemon attached a network after show_node: the
		// next attempt detaches it.
		return fmt.Errorf("%w (%w: a network action was applied meanwhile; detach again)", err, node.ErrPending)
	}
	return err
}

// detachNetwork queues HIL's detach_network and waits for the action.
func (c *Client) detachNetwork(ctx context.Context, name, nic, network string) error {
	if err := checkName("nic", nic); err != nil {
		return fmt.Errorf("detach nic: %w", err)
	}
	var queued struct {
		StatusID string `json:"status_id"`
	}
	path := nodePath(name) + "/nic/" + url.PathEscape(nic) + "/detach_network"
	err := c.do(ctx, http.MethodPost, path, networkArg{network}, &queued)
	if e, ok := asAPIError(err); ok && e.status == http.StatusBadRequest && strings.Contains(e.msg, "not attached") {
		return nil // detached meanwhile
	}
	if errors.Is(err, node.ErrPending) {
		return fmt.Errorf("detach network %s from nic %s: %w; an earlier network action on the nic is still PENDING: %s", network, nic, err, daemonHint)
	}
	if err != nil {
		return fmt.Errorf("detach network %s from nic %s: %w", network, nic, err)
	}
	if queued.StatusID == "" {
		return fmt.Errorf("detach network %s from nic %s: %w: no status_id in HIL's answer", network, nic, node.ErrBackend)
	}
	if err := c.waitAction(ctx, queued.StatusID); err != nil {
		return fmt.Errorf("detach network %s from nic %s: %w", network, nic, err)
	}
	return nil
}

// daemonHint is the likely reason a networking action stays PENDING.
const daemonHint = "is HIL's network daemon (hil-admin serve-networks) running?"

// waitAction polls a networking action until DONE, with a growing delay,
// for at most c.actionWait: an action that stays PENDING longer means HIL's
// network daemon (hil-admin serve-networks) is not running.
func (c *Client) waitAction(parent context.Context, id string) error {
	ctx, cancel := context.WithTimeout(parent, c.actionWait)
	defer cancel()
	delay := c.pollMin
	for {
		var action struct {
			Status string `json:"status"`
		}
		err := c.get(ctx, "/networking_action/"+url.PathEscape(id), &action)
		switch {
		case err != nil && parent.Err() == nil && ctx.Err() != nil:
			return fmt.Errorf("networking action %s: %w: still PENDING after %s; %s", id, node.ErrPending, c.actionWait, daemonHint)
		case err != nil:
			return fmt.Errorf("networking action %s: %w", id, err)
		case action.Status == "DONE":
			return nil
		case action.Status != "PENDING":
			return fmt.Errorf("networking action %s: %w: status %q", id, node.ErrBackend, action.Status)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			if parent.Err() != nil {
				return fmt.Errorf("networking action %s: %w", id, parent.Err())
			}
			return fmt.Errorf("networking action %s: %w: still PENDING after %s; %s", id, node.ErrPending, c.actionWait, daemonHint)
		case <-t.C:
		}
		delay = min(2*delay, c.pollMax)
	}
}

// PowerStatus reports whether node is on, through HIL's redirect to OBMd.
// A node whose OBM is disabled (a free node) is node.ErrBlocked.
func (c *Client) PowerStatus(ctx context.Context, node string) (bool, error) {
	if err := checkName("node", node); err != nil {
		return false, fmt.Errorf("power status: %w", err)
	}
	var st struct {
		PowerStatus string `json:"power_status"`
	}
	if err := c.obm(ctx, node, http.MethodGet, "power_status", nil, &st); err != nil {
		return false, fmt.Errorf("power status of node %s: %w", node, err)
	}
	on, err := parsePowerStatus(st.PowerStatus)
	if err != nil {
		return false, fmt.Errorf("power status of node %s: %w", node, err)
	}
	return on, nil
}

// parsePowerStatus reads OBMd's power_status: "on"/"off" from its IPMI and
// dummy drivers, "Chassis Power is on"-style text from others.
func parsePowerStatus(s string) (bool, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	switch {
	case t == "on" || strings.HasSuffix(t, " on"):
		return true, nil
	case t == "off" || strings.HasSuffix(t, " off"):
		return false, nil
	}
	return false, fmt.Errorf("%w: unrecognised power status %q", node.ErrBackend, s)
}

// Power sends a chassis power command through HIL and OBMd. Cycle and
// reset are power_cycle with force false and true; soft is node.ErrBadArgument,
// as HIL has no ACPI shutdown (power_off is a hard off).
func (c *Client) Power(ctx context.Context, name string, a node.PowerAction) error {
	if err := checkName("node", name); err != nil {
		return fmt.Errorf("power %s: %w", a, err)
	}
	var op string
	var body any
	switch a {
	case node.PowerOn:
		op = "power_on"
	case node.PowerOff:
		op = "power_off"
	case node.PowerCycle:
		op, body = "power_cycle", cycleArg{Force: false} // OBMd answers 400 to no body
	case node.PowerReset:
		op, body = "power_cycle", cycleArg{Force: true}
	case node.PowerSoft:
		return fmt.Errorf("power %s node %s: %w: soft power-off is not supported by HIL", a, name, node.ErrBadArgument)
	default:
		_, err := node.ParsePowerAction(string(a))
		return fmt.Errorf("power node %s: %w", name, err)
	}
	if err := c.obm(ctx, name, http.MethodPost, op, body, nil); err != nil {
		return fmt.Errorf("power %s node %s: %w", a, name, err)
	}
	return nil
}

// SetBootDevice sets node's boot device through HIL and OBMd. HIL knows pxe,
// disk and none, so bios and cdrom are node.ErrBadArgument. HIL has no
// persistence flag: persistent is ignored (OBMd's IPMI driver always sets
// the device persistently).
func (c *Client) SetBootDevice(ctx context.Context, name string, d node.BootDevice, persistent bool) error {
	if err := checkName("node", name); err != nil {
		return fmt.Errorf("set boot device: %w", err)
	}
	switch d {
	case node.BootPXE, node.BootDisk:
	case node.BootBIOS, node.BootCDROM:
		return fmt.Errorf("set boot device of node %s: %w: %s is not supported by HIL (pxe, disk or none)", name, node.ErrBadArgument, d)
	default:
		_, err := node.ParseBootDevice(string(d))
		return fmt.Errorf("set boot device of node %s: %w", name, err)
	}
	if err := c.obm(ctx, name, http.MethodPut, "boot_device", bootdevArg{Bootdev: string(d)}, nil); err != nil {
		return fmt.Errorf("set boot device of node %s to %s: %w", name, d, err)
	}
	return nil
}

// obm makes a call HIL answers with a 307 to OBMd. HIL forgets to keep
// OBMd tokens across its own restarts, after which OBMd answers 401 while
// HIL still thinks the OBM is enabled; the remedy is to enable the OBM
// again (a fresh token), once.
func (c *Client) obm(ctx context.Context, node, method, op string, in, out any) error {
	path := nodePath(node) + "/" + op
	call := func() error {
		if method == http.MethodGet {
			in = nil // never a body on a GET
		}
		return c.call(ctx, c.obmTimeout, method, path, in, out)
	}
	err := call()
	e, ok := asAPIError(err)
	if !ok || e.obmdPath == "" || e.status != http.StatusUnauthorized {
		return err
	}
	c.log.WarnContext(ctx, "hil: OBMd refused HIL's token; enabling the OBM again", "node", node, "op", op)
	if rerr := c.setOBM(ctx, node, true); rerr != nil {
		return fmt.Errorf("%w (re-enabling the OBM failed: %w)", err, rerr)
	}
	return call()
}
