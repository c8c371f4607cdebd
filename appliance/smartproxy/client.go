package smartproxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/malleable-cloud/malleable/appliance/m2"
)

// Client calls the appliance's broker API (/broker/v1) and M2 API
// (/m2/v1) with one tenant's broker token. It holds no policy: the
// appliance decides what the token may do. It is safe for concurrent use.
type Client struct {
	base  string
	token string
	http  *http.Client
}

var (
	_ Broker  = (*Client)(nil)
	_ Storage = (*Client)(nil)
)

// maxAnswer bounds an answer the client reads (boot scripts, lists).
const maxAnswer = 4 << 20

// NewClient returns a client of the appliance at baseURL (for example
// http://127.0.0.1:8780) that authenticates with token. A nil hc gets a
// client with pooled keep-alive connections. Calls are bounded by their
// context only: callers set the deadline.
func NewClient(baseURL, token string, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{Transport: newTransport(nil)}
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), token: token, http: hc}
}

// OpenClient returns a client configured by c: the token is read from
// c.TokenFile and, for an https URL, the appliance's certificate is checked
// against c.CAFile (the system roots when empty).
func OpenClient(c BrokerConfig) (*Client, error) {
	tok, err := readSecretFile(c.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("broker.token_file: %w", err)
	}
	var tc *tls.Config
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("broker.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("broker.ca_file: %s holds no PEM certificate", c.CAFile)
		}
		tc = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return NewClient(c.URL, tok, &http.Client{Transport: newTransport(tc)}), nil
}

// newTransport keeps enough idle connections to the appliance that
// Foreman's concurrent power-status reads do not reconnect each time.
func newTransport(tc *tls.Config) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 256
	tr.MaxIdleConnsPerHost = 128
	tr.IdleConnTimeout = 90 * time.Second
	if tc != nil {
		tr.TLSClientConfig = tc
	}
	return tr
}

// readSecretFile reads a one-line secret (token, password), without its
// surrounding white space. A file group or others may read is refused, as
// the appliance refuses its own admin token.
func readSecretFile(path string) (string, error) {
	if err := checkPrivate(path); err != nil {
		return "", err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

// checkPrivate refuses a secret file that group or others may read.
func checkPrivate(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s has mode %04o: it must not be readable by group or others (chmod 600 %s)", path, perm, path)
	}
	return nil
}

// escape joins path segments, each escaped.
func escape(parts ...string) string {
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

// do sends a JSON request and decodes a JSON answer into out.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	b, err := c.send(ctx, method, path, in, true)
	if err != nil || out == nil || len(b) == 0 {
		return err
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode the appliance's answer: %w", method, path, err)
	}
	return nil
}

// send makes one call and returns the answer's body; an error answer is
// an *APIError.
func (c *Client) send(ctx context.Context, method, path string, in any, auth bool) ([]byte, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		// The URL may hold a boot token: name the route, not the URL.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%s %s: %w", method, redactPath(path), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read the appliance's answer: %w", method, redactPath(path), err)
	}
	if resp.StatusCode >= 300 {
		return nil, decodeError(resp.StatusCode, b)
	}
	return b, nil
}

// decodeError turns an error answer into an *APIError.
func decodeError(status int, b []byte) error {
	var e struct {
		Error          string `json:"error"`
		NextLeaseStart string `json:"next_lease_start"`
	}
	out := &APIError{Status: status}
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		out.Message = e.Error
		if t, err := time.Parse(time.RFC3339, e.NextLeaseStart); err == nil {
			out.NextLeaseStart = &t
		}
	} else {
		out.Message = strings.TrimSpace(string(b))
		if len(out.Message) > 200 || out.Message == "" {
			out.Message = http.StatusText(status)
		}
	}
	return out
}

// Whoami implements Broker.
func (c *Client) Whoami(ctx context.Context) (Identity, error) {
	var out Identity
	if err := c.do(ctx, http.MethodGet, "/broker/v1/whoami", nil, &out); err != nil {
		return Identity{}, err
	}
	if out.Tenant == "" {
		return Identity{}, errors.New("GET /broker/v1/whoami: the appliance named no tenant")
	}
	return out, nil
}

// Nodes implements Broker.
func (c *Client) Nodes(ctx context.Context) ([]Lease, error) {
	var out []Lease
	return out, c.do(ctx, http.MethodGet, "/broker/v1/nodes", nil, &out)
}

// PowerStatus implements Broker.
func (c *Client) PowerStatus(ctx context.Context, ref string) (Power, error) {
	var out Power
	err := c.do(ctx, http.MethodGet, "/broker/v1/nodes/"+escape(ref)+"/power", nil, &out)
	if err == nil && out.Power != "on" && out.Power != "off" {
		err = fmt.Errorf("GET /broker/v1/nodes/{ref}/power: unexpected power %q", out.Power)
	}
	return out, err
}

// Power implements Broker.
func (c *Client) Power(ctx context.Context, ref, action string) error {
	return c.do(ctx, http.MethodPut, "/broker/v1/nodes/"+escape(ref)+"/power", map[string]string{"action": action}, nil)
}

// SetBootDevice implements Broker.
func (c *Client) SetBootDevice(ctx context.Context, ref, device string, persistent bool) error {
	body := map[string]any{"device": device, "persistent": persistent}
	return c.do(ctx, http.MethodPut, "/broker/v1/nodes/"+escape(ref)+"/boot-device", body, nil)
}

func m2Path(parts ...string) string { return "/m2/v1/" + escape(parts...) }

// Images implements Storage.
func (c *Client) Images(ctx context.Context) ([]m2.Image, error) {
	var out []m2.Image
	return out, c.do(ctx, http.MethodGet, m2Path("images"), nil, &out)
}

// Disks implements Storage.
func (c *Client) Disks(ctx context.Context, project string) ([]m2.Disk, error) {
	var out []m2.Disk
	return out, c.do(ctx, http.MethodGet, m2Path("projects", project, "disks"), nil, &out)
}

// Disk implements Storage.
func (c *Client) Disk(ctx context.Context, project, name string) (m2.Disk, error) {
	var out m2.Disk
	return out, c.do(ctx, http.MethodGet, m2Path("projects", project, "disks", name), nil, &out)
}

// CreateDisk implements Storage.
func (c *Client) CreateDisk(ctx context.Context, project, name, image, snapshot string) (m2.Disk, error) {
	body := map[string]string{"name": name}
	if image != "" {
		body["image"] = image
	}
	if snapshot != "" {
		body["snapshot"] = snapshot
	}
	var out m2.Disk
	return out, c.do(ctx, http.MethodPost, m2Path("projects", project, "disks"), body, &out)
}

// DeleteDisk implements Storage.
func (c *Client) DeleteDisk(ctx context.Context, project, name string) error {
	return c.do(ctx, http.MethodDelete, m2Path("projects", project, "disks", name), nil, nil)
}

// Attach implements Storage.
func (c *Client) Attach(ctx context.Context, project, disk, node string) (m2.Attachment, error) {
	var out m2.Attachment
	return out, c.do(ctx, http.MethodPost, m2Path("projects", project, "disks", disk, "attach"), map[string]string{"node": node}, &out)
}

// Detach implements Storage.
func (c *Client) Detach(ctx context.Context, project, disk string) error {
	return c.do(ctx, http.MethodPost, m2Path("projects", project, "disks", disk, "detach"), nil, nil)
}

// DiskBootScript implements Storage.
func (c *Client) DiskBootScript(ctx context.Context, project, disk string) ([]byte, error) {
	return c.send(ctx, http.MethodGet, m2Path("projects", project, "disks", disk, "boot.ipxe"), nil, true)
}

// BootScript implements Storage. The tenant's credential goes with the
// node's token, so the appliance serves only this tenant's scripts.
func (c *Client) BootScript(ctx context.Context, token string) ([]byte, error) {
	return c.send(ctx, http.MethodGet, m2Path("boot", token), nil, true)
}

// CreateSnapshot implements Storage.
func (c *Client) CreateSnapshot(ctx context.Context, project, disk, name string) (m2.Snapshot, error) {
	var out m2.Snapshot
	return out, c.do(ctx, http.MethodPost, m2Path("projects", project, "disks", disk, "snapshots"), map[string]string{"name": name}, &out)
}

// Snapshots implements Storage.
func (c *Client) Snapshots(ctx context.Context, project string) ([]m2.Snapshot, error) {
	var out []m2.Snapshot
	return out, c.do(ctx, http.MethodGet, m2Path("projects", project, "snapshots"), nil, &out)
}

// RemoveSnapshot implements Storage.
func (c *Client) RemoveSnapshot(ctx context.Context, project, name string) error {
	return c.do(ctx, http.MethodDelete, m2Path("projects", project, "snapshots", name), nil, nil)
}
