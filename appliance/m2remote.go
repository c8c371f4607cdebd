package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/malleable-cloud/malleable/appliance/audit"
	"github.com/malleable-cloud/malleable/appliance/broker"
	"github.com/malleable-cloud/malleable/appliance/httpx"
	"github.com/malleable-cloud/malleable/appliance/inventory"
	"github.com/malleable-cloud/malleable/appliance/m2"
	"github.com/malleable-cloud/malleable/appliance/m2/server"
)

// projectHeader names the project a request forwarded by the appliance to
// a standalone M2 backend acts for. The backend believes it only from a
// caller holding the admin token: the appliance, which authenticated the
// tenant itself and removes the header from whatever its callers send.
const projectHeader = "X-Malleable-Project"

// m2Remote forwards the appliance's /m2/v1 to a standalone backend
// (`malleable m2 serve`, [m2] endpoint) after the appliance authenticated
// the caller, and is the handover's unbind step over that backend.
type m2Remote struct {
	client  *m2.Client
	proxy   *httputil.ReverseProxy
	timeout server.Timeouts
	log     *slog.Logger
}

// newM2Remote returns the forwarder to the backend at endpoint (scheme and
// host only), authenticating with token: the backend shares the
// appliance's admin token.
func newM2Remote(endpoint, token string, t server.Timeouts, log *slog.Logger) (*m2Remote, error) {
	u, err := parseEndpoint(endpoint)
	if err != nil {
		return nil, err
	}
	m := &m2Remote{client: m2.NewClient(u.String(), token, &http.Client{Timeout: t.Operation + time.Minute}), timeout: t, log: log}
	m.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = u.Host
			pr.Out.Header.Set("Authorization", "Bearer "+token)
			pr.Out.Header.Del(projectHeader)
			if t := broker.Tenant(pr.In.Context()); t != "" {
				pr.Out.Header.Set(projectHeader, t)
			}
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			log.Error("M2 backend unreachable", "endpoint", u.String(), "err", err)
			httpx.WriteError(w, httpx.Errorf(http.StatusBadGateway, "the M2 backend at %s did not answer", u.Host))
		},
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return m, nil
}

// parseEndpoint accepts http(s)://host:port with no path, query or user;
// plain http only to a loopback address, since the admin token crosses it.
func parseEndpoint(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Port() == "" ||
		strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.User != nil || u.Fragment != "" {
		return nil, fmt.Errorf("%q is not http(s)://host:port", s)
	}
	if ip, err := netip.ParseAddr(u.Hostname()); u.Scheme == "http" && (err != nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("%q: the admin token crosses this link: use https, or http to a loopback address only", s)
	}
	u.Path = ""
	return u, nil
}

// forward sends an authenticated request on, giving mutations the M2
// routes' own deadlines instead of the listener's general ones, and
// records each mutation in the appliance's audit log with the backend's
// answer.
func (m *m2Remote) forward(rec audit.Recorder, now func() time.Time) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mutation := r.Method != http.MethodGet && r.Method != http.MethodHead
		if mutation {
			rc := http.NewResponseController(w)
			rc.SetReadDeadline(time.Now().Add(m.timeout.Transfer))
			rc.SetWriteDeadline(time.Now().Add(m.timeout.Operation))
		}
		sr := &httpx.StatusRecorder{ResponseWriter: w}
		m.proxy.ServeHTTP(sr, r)
		if !mutation {
			return
		}
		var err error
		if sr.Status >= 400 {
			err = fmt.Errorf("the M2 backend answered %d", sr.Status)
		}
		rec.Record(r.Context(), audit.Entry{At: now(), Actor: audit.Actor(r.Context()), Action: "m2." + strings.ToLower(r.Method),
			Target: strings.TrimPrefix(httpx.RedactPath(r.URL.Path), server.Prefix+"/"), Result: audit.Result(sr.Status, err)})
	})
}

// UnbindNode detaches the tenant's disks from the node (they are kept):
// the handover's unbind step over the standalone backend.
func (m *m2Remote) UnbindNode(ctx context.Context, node, tenant string) error {
	disks, err := m.client.Disks(ctx, tenant)
	if err != nil {
		return fmt.Errorf("list %s's disks: %w", tenant, err)
	}
	var errs []error
	for _, d := range disks {
		if d.Node != node {
			continue
		}
		if err := m.client.Detach(ctx, tenant, d.Name); err != nil && httpx.StatusOf(err) != http.StatusNotFound {
			errs = append(errs, fmt.Errorf("detach %s/%s: %w", tenant, d.Name, err))
		}
	}
	return errors.Join(errs...)
}

// RemoveTenantDisks deletes every disk and snapshot of the tenant's
// project on the standalone backend (m2.RemoveProject).
func (m *m2Remote) RemoveTenantDisks(ctx context.Context, tenant string) (int, error) {
	return m2.RemoveProject(ctx, m.client, tenant)
}

// remoteCaller is who calls a standalone backend: the appliance (the
// admin token) acting for itself or, with projectHeader, for one tenant.
func remoteCaller(token string) func(r *http.Request) (server.Caller, bool) {
	return func(r *http.Request) (server.Caller, bool) {
		got, ok := httpx.BearerToken(r)
		if !ok || !httpx.TokenMatches(got, token) {
			return server.Caller{}, false
		}
		if p := r.Header.Get(projectHeader); p != "" {
			if inventory.ValidateName("project", p) != nil {
				return server.Caller{}, false
			}
			return server.Caller{Project: p}, true
		}
		return server.Caller{Admin: true}, true
	}
}
