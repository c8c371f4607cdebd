package reconcile

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/malleable-cloud/malleable/appliance/reconcile/pass"
	"github.com/robfig/cron/v3"
)

// RunCron runs a reconcile pass on schedule (UTC) until ctx ends, then waits
// for a running pass to finish. A pass still running when the next is due
// (the schedule's own or another, such as an admin's) is waited for, not
// doubled up; a panicking pass is logged and the schedule goes on (Recover
// wraps innermost: with cron v3.0.1 the other order leaks the skip token on
// a panic and every later pass is skipped).
func (rec *Reconciler) RunCron(ctx context.Context, schedule string, log *slog.Logger) error {
	logger := cronLogger{log.With("component", "cron")}
	c := cron.New(
		cron.WithLocation(time.UTC),
		cron.WithParser(scheduleParser()),
		cron.WithLogger(logger),
		cron.WithChain(cron.SkipIfStillRunning(logger), cron.Recover(logger)),
	)
	if _, err := c.AddFunc(schedule, func() {
		if ctx.Err() != nil {
			return
		}
		rec.passOrJoin(ctx, pass.TriggerCron) // the pass logs its own outcome
	}); err != nil {
		return fmt.Errorf("reconcile schedule %q: %w", schedule, err)
	}
	c.Start()
	log.Info("reconciler scheduled", "schedule", schedule)
	<-ctx.Done()
	<-c.Stop().Done()
	return nil
}

// cronLogger adapts slog to cron's logger interface.
type cronLogger struct{ log *slog.Logger }

func (l cronLogger) Info(msg string, kv ...any) { l.log.Debug(msg, kv...) }

func (l cronLogger) Error(err error, msg string, kv ...any) {
	l.log.Error(msg, append(kv, "err", err)...)
}

// CheckSchedule checks a cron spec the way the reconciler will parse it.
// The cron parser panics on some malformed specs, so it runs under recover.
func CheckSchedule(spec string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%q is not a cron schedule", spec)
		}
	}()
	if strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=") {
		return fmt.Errorf("%q: time zones are not allowed; the reconciler runs in UTC", spec)
	}
	if _, err := scheduleParser().Parse(spec); err != nil {
		return fmt.Errorf("%q is not a cron schedule (five fields or @every 15s): %v", spec, err)
	}
	return nil
}

// scheduleParser accepts standard five-field specs and descriptors such as
// @every 15s and @hourly.
func scheduleParser() cron.Parser {
	return cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)
}
