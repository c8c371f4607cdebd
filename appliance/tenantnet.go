package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/malleable-cloud/malleable/appliance/broker"
	"github.com/malleable-cloud/malleable/appliance/httpx"
	"github.com/malleable-cloud/malleable/appliance/m2/server"
	"github.com/malleable-cloud/malleable/appliance/store"
)

// tenantListeners serve each tenant's smart-proxy the broker and the M2 API
// on the appliance's address on that tenant's private network, and answer
// that tenant's credential only: another tenant's token is refused there
// even though it is valid on the main listener.
type tenantListeners struct {
	store   *store.Store
	handler http.Handler // the appliance's listener's handler
	port    int
	log     *slog.Logger

	mu   sync.Mutex
	byID map[string]*tenantListener
}

type tenantListener struct {
	host string
	url  string
	srv  *http.Server
}

func newTenantListeners(st *store.Store, h http.Handler, port int, log *slog.Logger) *tenantListeners {
	return &tenantListeners{store: st, handler: h, port: port, log: log, byID: map[string]*tenantListener{}}
}

// Listen serves tenant on host (the gateway of its network), once; a
// changed host moves the listener. It returns the URL the tenant's
// smart-proxy calls.
func (t *tenantListeners) Listen(ctx context.Context, tenant, host string) (string, error) {
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return "", fmt.Errorf("tenant network gateway %q: %w", host, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if l, ok := t.byID[tenant]; ok {
		if l.host == addr.String() {
			return l.url, nil
		}
		l.srv.Close()
		delete(t.byID, tenant)
	}
	hostPort := net.JoinHostPort(addr.String(), strconv.Itoa(t.port))
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", hostPort)
	if err != nil {
		return "", fmt.Errorf("listen for %s's smart-proxy on %s: %w", tenant, hostPort, err)
	}
	l := &tenantListener{host: addr.String(), url: "http://" + hostPort}
	l.srv = &http.Server{Handler: t.only(tenant), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(t.log.Handler(), slog.LevelWarn)}
	go func() {
		if err := l.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			t.log.Error("tenant listener stopped", "tenant", tenant, "err", err)
			// Forget it, so that the next Listen opens a new one.
			t.mu.Lock()
			if t.byID[tenant] == l {
				delete(t.byID, tenant)
			}
			t.mu.Unlock()
		}
	}()
	t.byID[tenant] = l
	t.log.Info("serving a tenant's smart-proxy", "tenant", tenant, "url", l.url)
	return l.url, nil
}

// only passes the broker and M2 routes of tenant's own credential.
func (t *tenantListeners) only(tenant string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if !strings.HasPrefix(p, broker.Prefix+"/") && !strings.HasPrefix(p, server.Prefix+"/") {
			httpx.WriteError(w, httpx.Errorf(http.StatusNotFound, "only the broker and M2 APIs are served here"))
			return
		}
		if got, ok := broker.Authenticate(t.store, r); !ok || got != tenant {
			httpx.Unauthorized(w, "malleable", "not "+tenant+"'s smart-proxy credential")
			return
		}
		t.handler.ServeHTTP(w, r)
	})
}

// Close stops tenant's listener, if any.
func (t *tenantListeners) Close(tenant string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	l, ok := t.byID[tenant]
	if !ok {
		return nil
	}
	delete(t.byID, tenant)
	return l.srv.Close()
}

// closeAll stops every tenant listener (shutdown).
func (t *tenantListeners) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for name, l := range t.byID {
		l.srv.Close()
		delete(t.byID, name)
	}
}
