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
	"net/http"
	"net/url"
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
