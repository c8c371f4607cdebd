package appliance

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"

	"github.com/gorilla/mux"

	"github.com/malleable-cloud/malleable/appliance/iscsi"
	"github.com/malleable-cloud/malleable/appliance/m2/server"
	"github.com/malleable-cloud/malleable/appliance/storage"
	"github.com/malleable-cloud/malleable/appliance/store"
)

// iscsiTargets adapts the tgtd driver to what the M2 backend needs.
type iscsiTargets struct{ d *iscsi.Driver }

func toISCSI(t server.TargetSpec) iscsi.Target {
	return iscsi.Target{IQN: t.IQN, Backing: t.Backing, CHAPUser: t.CHAPUser, CHAPSecret: t.CHAPSecret, Initiators: t.Initiators}
}

func (a iscsiTargets) Apply(ctx context.Context, t server.TargetSpec) error {
	return a.d.Apply(ctx, toISCSI(t))
}

func (a iscsiTargets) Remove(ctx context.Context, iqn string) error { return a.d.Remove(ctx, iqn) }

func (a iscsiTargets) Reconcile(ctx context.Context, want []server.TargetSpec) error {
	ts := make([]iscsi.Target, len(want))
	for i, t := range want {
		ts[i] = toISCSI(t)
	}
	return a.d.Reconcile(ctx, ts)
}

// m2Backend is a running M2 backend with what it owns.
type m2Backend struct {
	backend *server.Backend
	close   func(context.Context)
}

// startM2 starts the M2 backend: storage under [m2] dir, tgtd (supervised
// or external), and the backend, which re-creates every target from its
// metadata.
func startM2(ctx context.Context, cfg Config, sec secretStore, log *slog.Logger) (*m2Backend, error) {
	m := cfg.M2
	log = log.With("component", "m2")
	if err := os.MkdirAll(m.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("m2: %w", err)
	}
	vols, err := storage.NewFile(filepath.Join(m.Dir, "volumes"), storage.FileOptions{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("m2: storage: %w", err)
	}
	opts := iscsi.Options{Portal: m.Portal, ControlPort: m.TgtdControlPort, Logger: log}
	var tgtd *iscsi.Tgtd
	if m.Tgtd == "supervise" {
		if tgtd, err = iscsi.StartTgtd(ctx, opts); err != nil {
			vols.Close()
			return nil, fmt.Errorf("m2: start tgtd: %w", err)
		}
		log.Info("tgtd started", "portal", m.Portal, "control_port", m.TgtdControlPort)
	}
	portal := m.BootPortal
	if portal == "" {
		portal = m.Portal
	}
	b, err := server.Open(ctx, server.Config{DB: filepath.Join(m.Dir, "m2.db"), IQNPrefix: m.IQNPrefix, Portal: portal,
		Storage: vols, Targets: iscsiTargets{iscsi.New(opts)}, Secrets: sec, Logger: log})
	if err != nil {
		if tgtd != nil {
			tgtd.Stop(context.WithoutCancel(ctx))
		}
		vols.Close()
		return nil, err
	}
	return &m2Backend{backend: b, close: func(ctx context.Context) {
		b.Close()
		if tgtd != nil {
			if err := tgtd.Stop(ctx); err != nil {
				log.Warn("stop tgtd", "err", err)
			}
		}
		vols.Close()
	}}, nil
}

// m2Disks is the handover's unbind step over the M2 backend: the old
// tenant's disk is detached from the node (and kept).
type m2Disks struct{ b *server.Backend }

func (d m2Disks) UnbindNode(ctx context.Context, node, tenant string) error {
	return d.b.DetachNode(ctx, node, tenant)
}

// bootAllowed lets a node fetch its boot script only while the disk's
// project holds the node.
func bootAllowed(st *store.Store) func(ctx context.Context, project, node string) error {
	return func(ctx context.Context, project, node string) error {
		holder, err := st.Holder(ctx, node)
		if err != nil {
			return err
		}
		if holder != project {
			return fmt.Errorf("node %s is not held by %s", node, project)
		}
		return nil
	}
}

// m2Routes mounts the M2 API in the appliance's router. The admin token,
// checked before any route runs, acts for every project; boot scripts need
// only their token.
func m2Routes(r *mux.Router, b *server.Backend, st *store.Store, log *slog.Logger) {
	server.Register(r, server.HandlerConfig{
		Backend:     b,
		Authorize:   func(*http.Request) (server.Caller, bool) { return server.Caller{Admin: true}, true },
		BootAllowed: bootAllowed(st),
		Logger:      log,
	})
}
