package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/malleable-cloud/malleable/appliance/client"
	"github.com/malleable-cloud/malleable/appliance/lease"
)

// Following a pass: how often to poll (sooner at first, backing off), how long one poll may take, how
// many polls in a row may fail (a loaded appliance) before the CLI gives
// up, and how long without news before it says it is still waiting. A
// pass itself has no deadline here.
const (
	pollFirst       = 25 * time.Millisecond // most passes take milliseconds
	pollEvery       = 500 * time.Millisecond
	pollTimeout     = 10 * time.Second
	pollFailures    = 5
	stillRunningGap = 10 * time.Second
)

func cmdReconcile(ctx context.Context, e env, args []string) error {
	var noWait, follow bool
	cmds := map[string]*command{
		"now": {
			usage: "reconcile now [--no-wait]",
			long:  true,
			flags: func(fs *flag.FlagSet) {
				fs.BoolVar(&noWait, "no-wait", false, "start the pass (or find the running one), print its id and return")
			},
			run: func(ctx context.Context, c *client.Client, out *printer, _ []string) error {
				p, started, err := c.Reconcile(ctx)
				if err != nil {
					return err
				}
				if !out.json {
					if started {
						fmt.Fprintf(out.w, "pass %d started\n", p.ID)
					} else {
						fmt.Fprintf(out.w, "pass %d was already running (%s, since %s): following it; it may not include changes made after it started\n",
							p.ID, who(p), fmtTime(p.StartedAt))
					}
				}
				if noWait {
					if out.json {
						return out.print(p, nil)
					}
					fmt.Fprintf(out.w, "follow it with: malleable reconcile show %d --follow\n", p.ID)
					return nil
				}
				return followPass(ctx, c, out, p)
			},
		},
		"show": {
			usage: "reconcile show (ID | latest) [--follow]",
			nargs: 1,
			long:  true,
			flags: func(fs *flag.FlagSet) {
				fs.BoolVar(&follow, "follow", false, "follow a running pass until it ends")
			},
			run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
				var id int64
				if args[0] != "latest" {
					var err error
					if id, err = positiveID("pass", args[0]); err != nil {
						return err
					}
				}
				p, err := getPass(ctx, c, id)
				if err != nil {
					return err
				}
				if follow {
					return followPass(ctx, c, out, p)
				}
				return out.print(p, passTable(p))
			},
		},
	}
	return runGroup(ctx, e, "reconcile", cmds, []string{"now", "show"}, args)
}

func getPass(ctx context.Context, c *client.Client, id int64) (client.Pass, error) {
	ctx, cancel := context.WithTimeout(ctx, pollTimeout)
	defer cancel()
	return c.ReconcilePass(ctx, id)
}

// followPass polls pass p until it ends, printing each handover step as it
// ends (table output), then the pass's summary; with -o json only the
// final record. It fails if the pass failed or a handover did not finish.
func followPass(ctx context.Context, c *client.Client, out *printer, p client.Pass) error {
	w := out.w
	if out.json {
		w = io.Discard
	}
	p, err := watch(ctx, c, newProgress(w, 0), p)
	if err != nil {
		return err
	}
	if out.json {
		if err := out.print(p, nil); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(out.w, passSummary(p))
	}
	return passOutcome(p)
}

// retryHandover retries handover id and follows it through the pass that
// resumes it, printing its steps; it fails unless the handover is done.
func retryHandover(ctx context.Context, c *client.Client, out *printer, id int64, noWait bool) error {
	r, err := c.RetryHandover(ctx, id)
	if err != nil {
		return err
	}
	if r.Pass == nil {
		h := client.Handover{Handover: r.Handover}
		if err := out.print(h, handoverTable(h)); err != nil {
			return err
		}
		if !out.json {
			fmt.Fprintln(out.w, "no pass could start now: the next reconcile pass resumes it")
		}
		return nil
	}
	w := out.w
	if out.json {
		w = io.Discard
	}
	fmt.Fprintf(w, "handover %d of %s is running again; pass %d resumes it", id, r.Node, r.Pass.ID)
	if r.Pass.State == client.PassQueued {
		fmt.Fprintf(w, " after pass %d", r.Pass.QueuedBehind)
	}
	fmt.Fprintln(w)
	if noWait {
		fmt.Fprintf(w, "follow it with: malleable reconcile show %d --follow\n", r.Pass.ID)
		if out.json {
			return out.print(r, nil)
		}
		return nil
	}
	p, err := watch(ctx, c, newProgress(w, id), *r.Pass)
	if err != nil {
		return err
	}
	hctx, cancel := context.WithTimeout(ctx, pollTimeout)
	defer cancel()
	h, err := c.Handover(hctx, id)
	if err != nil {
		return err
	}
	if err := out.print(h, handoverTable(h)); err != nil {
		return err
	}
	switch {
	case h.Status == lease.HandoverDone:
		return nil
	case p.State == client.PassFailed:
		return fmt.Errorf("pass %d failed: %s", p.ID, p.Error)
	}
	return fmt.Errorf("handover %d is %s at %s: %s", id, h.Status, h.Step, orDash(h.LastError))
}

// watch polls pass p, reporting progress, until it ends. Each poll has its
// own deadline; the whole may take as long as the pass does.
func watch(ctx context.Context, c *client.Client, pr *progress, p client.Pass) (client.Pass, error) {
	failures, wait := 0, pollFirst
	for {
		pr.report(p)
		if p.Ended() {
			return p, nil
		}
		select {
		case <-ctx.Done():
			return p, fmt.Errorf("stopped following; pass %d goes on in the appliance (malleable reconcile show %d --follow)", p.ID, p.ID)
		case <-time.After(wait):
		}
		wait = min(2*wait, pollEvery)
		np, err := getPass(ctx, c, p.ID)
		var ae *client.Error
		switch {
		case err == nil:
			p, failures = np, 0
		case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
			return p, fmt.Errorf("pass %d is no longer known to the appliance (restarted?): see malleable lease handovers --open", p.ID)
		case errors.Is(err, syscall.ECONNREFUSED):
			// The appliance is gone, and its passes with it.
			return p, fmt.Errorf("following pass %d: %w", p.ID, err)
		case ctx.Err() == nil:
			if failures++; failures >= pollFailures {
				return p, fmt.Errorf("following pass %d: %w", p.ID, err)
			}
		}
	}
}

// progress prints the steps of a pass's handovers as they end.
type progress struct {
	w       io.Writer
	only    int64          // report only this handover; 0: all
	printed map[int64]int  // steps already printed, by handover
	stuck   map[int64]bool // handovers reported stuck
	last    time.Time      // when something was last printed
	start   time.Time      // when following began
	behind  int64          // the pass a queued pass was last reported waiting for
}

func newProgress(w io.Writer, only int64) *progress {
	now := time.Now()
	return &progress{w: w, only: only, printed: map[int64]int{}, stuck: map[int64]bool{}, last: now, start: now}
}

func (pr *progress) report(p client.Pass) {
	if p.State == client.PassQueued && pr.behind != p.QueuedBehind {
		pr.behind = p.QueuedBehind
		pr.printf("pass %d waits for pass %d to end\n", p.ID, p.QueuedBehind)
	}
	for _, h := range p.Handovers {
		if pr.only != 0 && h.ID != pr.only {
			continue
		}
		for i := pr.printed[h.ID]; i < len(h.Steps) && h.Steps[i].Outcome != "running"; i++ {
			pr.printf("%s: %s\n", handoverName(h.Handover), stepLine(h.Steps[i], h.Attempts))
			pr.printed[h.ID] = i + 1
		}
		if h.Status == lease.HandoverStuck && !pr.stuck[h.ID] {
			pr.stuck[h.ID] = true
			pr.printf("%s: stuck at %s: fix the cause, then: malleable lease retry %d\n", handoverName(h.Handover), h.Step, h.ID)
		}
	}
	if !p.Ended() && time.Since(pr.last) >= stillRunningGap {
		var at []string
		for _, h := range p.Handovers {
			if (pr.only == 0 || h.ID == pr.only) && h.Status == lease.HandoverRunning {
				at = append(at, fmt.Sprintf("handover %d %s at %s", h.ID, h.Node, h.Step))
			}
		}
		what := "no handover under way"
		if len(at) > 0 {
			what = strings.Join(at, ", ")
		}
		pr.printf("… %s: pass %d %s; %s\n", time.Since(pr.start).Round(time.Second), p.ID, p.State, what)
	}
}

func (pr *progress) printf(format string, args ...any) {
	fmt.Fprintf(pr.w, format, args...)
	pr.last = time.Now()
}

func handoverName(h lease.Handover) string {
	return fmt.Sprintf("handover %d %s %s → %s", h.ID, h.Node, orFree(h.From), orFree(h.To))
}

func stepLine(s client.StepRun, attempts int) string {
	took := fmt.Sprintf("%.1fs", s.EndedAt.Sub(s.StartedAt).Seconds())
	switch s.Outcome {
	case "skipped":
		return fmt.Sprintf("%s … skipped: %s", s.Step, s.Detail)
	case "failed":
		return fmt.Sprintf("%s … failed (%s, attempt %d): %s", s.Step, took, attempts, s.Detail)
	case "interrupted":
		return fmt.Sprintf("%s … interrupted (%s): %s", s.Step, took, s.Detail)
	}
	return fmt.Sprintf("%s … %s (%s)", s.Step, s.Outcome, took)
}

func orFree(s string) string {
	if s == "" {
		return "(free)"
	}
	return s
}

func who(p client.Pass) string {
	if p.By != "" {
		return p.Trigger + " by " + p.By
	}
	return p.Trigger
}

func passSummary(p client.Pass) string {
	r := p.Result
	s := fmt.Sprintf("pass %d %s in %.1fs: %d nodes; %d started, %d resumed, %d completed, %d failed, %d stuck, %d drift",
		p.ID, p.State, r.Duration.Seconds(), r.Nodes, r.Started, r.Resumed, r.Completed, r.Failed, r.Stuck, r.Drift)
	if p.Error != "" {
		s += "; error: " + p.Error
	}
	return s
}

// passOutcome fails when the pass failed or one of its handovers did not
// finish.
func passOutcome(p client.Pass) error {
	var errs []error
	if p.State == client.PassFailed {
		errs = append(errs, fmt.Errorf("pass %d failed: %s", p.ID, p.Error))
	}
	for _, h := range p.Handovers {
		if h.Status != lease.HandoverDone {
			errs = append(errs, fmt.Errorf("%s did not finish: %s at %s: %s (see malleable lease handover %d)",
				handoverName(h.Handover), h.Status, h.Step, orDash(h.LastError), h.ID))
		}
	}
	return errors.Join(errs...)
}

func passTable(p client.Pass) func(*tabwriter.Writer) {
	return func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "PASS\tTRIGGER\tSTATE\tSTARTED\tNODES\tSTARTED\tRESUMED\tCOMPLETED\tFAILED\tSTUCK\tDRIFT\tDURATION")
		r := p.Result
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", p.ID, who(p), p.State, fmtTime(p.StartedAt),
			r.Nodes, r.Started, r.Resumed, r.Completed, r.Failed, r.Stuck, r.Drift, r.Duration.Round(time.Millisecond))
		if len(p.Handovers) > 0 {
			hs := make([]client.Handover, len(p.Handovers))
			for i, h := range p.Handovers {
				hs[i] = client.Handover{Handover: h.Handover}
			}
			fmt.Fprintln(tw)
			handoverTable(hs...)(tw)
		}
	}
}
