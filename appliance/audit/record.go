package audit

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Appender appends an entry to the audit log: the store.
type Appender interface {
	AppendAudit(ctx context.Context, e Entry) (Entry, error)
}

// Recorder writes entries to the audit log for a request handler: with a
// deadline of its own, since a client that hangs up must not keep its
// action out of the log, and never failing the request (a failed write is
// logged as an error).
type Recorder struct {
	Log Appender
	// Logger receives failed writes; none when nil.
	Logger *slog.Logger
}

// Record appends e.
func (r Recorder) Record(ctx context.Context, e Entry) {
	if r.Log == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := r.Log.AppendAudit(ctx, e); err != nil && r.Logger != nil {
		r.Logger.Error("audit log write failed", "action", e.Action, "target", e.Target, "err", err)
	}
}

// Result is the outcome an entry records for a request answered with
// status and err: "ok", "refused (4xx): why" or "failed: why".
func Result(status int, err error) string {
	switch {
	case err == nil:
		return "ok"
	case status >= 500:
		return "failed: " + err.Error()
	}
	return fmt.Sprintf("refused (%d): %v", status, err)
}

type actorKey struct{}

// WithActor returns ctx carrying who makes the request: "admin",
// "tenant:NAME", "reconciler".
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

// Actor returns who makes the request, "anonymous" if nobody said.
func Actor(ctx context.Context) string {
	if s, ok := ctx.Value(actorKey{}).(string); ok {
		return s
	}
	return "anonymous"
}
