package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/malleable-cloud/malleable/appliance/client"
	"github.com/malleable-cloud/malleable/appliance/lease"
)

func leaseTable(ls ...client.Lease) func(*tabwriter.Writer) {
	return func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "ID\tNODE\tTENANT\tSTART\tEND\tSTATE")
		for _, l := range ls {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", l.ID, l.Node, l.Tenant, fmtTime(l.Start), fmtTime(l.End), l.State)
		}
	}
}

func leaseID(s string) (int64, error) { return positiveID("lease", s) }

func handoverID(s string) (int64, error) { return positiveID("handover", s) }

func positiveID(what, s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id < 1 {
		return 0, usagef("%s id %q is not a positive integer", what, s)
	}
	return id, nil
}

func cmdLease(ctx context.Context, e env, args []string) error {
	var spec client.LeaseSpec
	var q client.LeaseQuery
	var start, end, from, to, state, by string
	now := time.Now()
	cmds := map[string]*command{
		"add": {
			usage: "lease add --node NODE --tenant TENANT [--start TIME] [--end TIME | --duration D]",
			flags: func(fs *flag.FlagSet) {
				fs.StringVar(&spec.Node, "node", "", "node to lease (required)")
				fs.StringVar(&spec.Tenant, "tenant", "", "tenant that gets it (required)")
				fs.StringVar(&start, "start", "", "start: RFC 3339, now or +DURATION (default now)")
				fs.StringVar(&end, "end", "", "end (exclusive): RFC 3339 or +DURATION from now")
				fs.StringVar(&spec.Duration, "duration", "", "length instead of --end, such as 72h (default [leases] default_duration)")
			},
			run: func(ctx context.Context, c *client.Client, out *printer, _ []string) error {
				if spec.Node == "" || spec.Tenant == "" {
					return usagef("lease add: --node and --tenant are required")
				}
				var err error
				if spec.Start, err = parseWhen("start", start, now); err != nil {
					return err
				}
				if spec.End, err = parseWhen("end", end, now); err != nil {
					return err
				}
				l, err := c.CreateLease(ctx, spec)
				if err != nil {
					return err
				}
				return out.print(l, leaseTable(l))
			},
		},
		"list": {
			usage: "lease list [--node NODE] [--tenant TENANT] [--from TIME] [--to TIME] [--state STATE]",
			flags: func(fs *flag.FlagSet) {
				fs.StringVar(&q.Node, "node", "", "only this node's leases")
				fs.StringVar(&q.Tenant, "tenant", "", "only this tenant's leases")
				fs.StringVar(&from, "from", "", "only leases ending after this time")
				fs.StringVar(&to, "to", "", "only leases starting before this time")
				fs.StringVar(&state, "state", "", "scheduled, active, ended or cancelled")
				fs.IntVar(&q.Limit, "limit", 0, "at most this many")
			},
			run: func(ctx context.Context, c *client.Client, out *printer, _ []string) error {
				for _, w := range []struct {
					name, val string
					dst       *time.Time
				}{{"from", from, &q.From}, {"to", to, &q.To}} {
					s, err := parseWhen(w.name, w.val, now)
					if err != nil {
						return err
					}
					if s != "" {
						*w.dst, _ = time.Parse(time.RFC3339, s)
					}
				}
				if state != "" {
					st, err := lease.ParseState(state)
					if err != nil {
						return usagef("--state: %v", err)
					}
					q.State = st
				}
				ls, err := c.Leases(ctx, q)
				if err != nil {
					return err
				}
				return out.print(ls, leaseTable(ls...))
			},
		},
		"show": {
			usage: "lease show ID",
			nargs: 1,
			run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
				id, err := leaseID(args[0])
				if err != nil {
					return err
				}
				l, err := c.Lease(ctx, id)
				if err != nil {
					return err
				}
				return out.print(l, leaseTable(l))
			},
		},
		"cancel": {
			usage: "lease cancel (ID | --node NODE --tenant TENANT)",
			nargs: -1,
			flags: func(fs *flag.FlagSet) {
				fs.StringVar(&q.Node, "node", "", "with --tenant: cancel that tenant's current or next lease of this node")
				fs.StringVar(&q.Tenant, "tenant", "", "with --node: see --node")
			},
			run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
				id, err := pickLease(ctx, c, args, q.Node, q.Tenant, now)
				if err != nil {
					return err
				}
				l, err := c.CancelLease(ctx, id)
				if err != nil {
					return err
				}
				return out.print(l, leaseTable(l))
			},
		},
		"extend": {
			usage: "lease extend ID (--end TIME | --by DURATION)",
			nargs: 1,
			flags: func(fs *flag.FlagSet) {
				fs.StringVar(&end, "end", "", "new end: RFC 3339 or +DURATION from now")
				fs.StringVar(&by, "by", "", "add this to the current end, such as 24h")
			},
			run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
				id, err := leaseID(args[0])
				if err != nil {
					return err
				}
				if (end == "") == (by == "") {
					return usagef("lease extend: give exactly one of --end or --by")
				}
				e, err := parseWhen("end", end, now)
				if err != nil {
					return err
				}
				l, err := c.ExtendLease(ctx, id, e, by)
				if err != nil {
					return err
				}
				return out.print(l, leaseTable(l))
			},
		},
	}
	var handoverNode string
	var openOnly bool
	var handoverLimit int
	cmds["handovers"] = &command{
		usage: "lease handovers [--node NODE] [--open] [--limit N]",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&handoverNode, "node", "", "only this node's handovers")
			fs.BoolVar(&openOnly, "open", false, "only running or stuck handovers")
			fs.IntVar(&handoverLimit, "limit", 100, "at most this many, newest first")
		},
		run: func(ctx context.Context, c *client.Client, out *printer, _ []string) error {
			hs, err := c.Handovers(ctx, handoverNode, openOnly, handoverLimit)
			if err != nil {
				return err
			}
			return out.print(hs, handoverTable(hs...))
		},
	}
	cmds["handover"] = &command{
		usage: "lease handover ID",
		nargs: 1,
		run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
			id, err := handoverID(args[0])
			if err != nil {
				return err
			}
			h, err := c.Handover(ctx, id)
			if err != nil {
				return err
			}
			return out.print(h, func(tw *tabwriter.Writer) {
				handoverTable(h)(tw)
				fmt.Fprintln(tw, "\nAT\tSTEP\tPHASE\tDETAIL")
				for _, j := range h.Journal {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", fmtTime(j.At), j.Step, j.Phase, orDash(j.Detail))
				}
			})
		},
	}
	var noWait bool
	cmds["retry"] = &command{
		usage: "lease retry HANDOVER-ID [--no-wait]",
		nargs: 1,
		long:  true,
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&noWait, "no-wait", false, "start the retry and return, without following it")
		},
		run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
			id, err := handoverID(args[0])
			if err != nil {
				return err
			}
			return retryHandover(ctx, c, out, id, noWait)
		},
	}
	return runGroup(ctx, e, "lease", cmds, []string{"add", "list", "show", "cancel", "extend", "handovers", "handover", "retry"}, args)
}

func cmdAudit(ctx context.Context, e env, args []string) error {
	var limit int
	cmds := map[string]*command{
		"list": {
			usage: "audit list [--limit N]",
			flags: func(fs *flag.FlagSet) { fs.IntVar(&limit, "limit", 50, "how many entries, newest first") },
			run: func(ctx context.Context, c *client.Client, out *printer, _ []string) error {
				es, err := c.Audit(ctx, limit)
				if err != nil {
					return err
				}
				return out.print(es, func(tw *tabwriter.Writer) {
					fmt.Fprintln(tw, "ID\tAT\tACTOR\tACTION\tTARGET\tRESULT")
					for _, a := range es {
						fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", a.ID, fmtTime(a.At), a.Actor, a.Action, a.Target, a.Result)
					}
				})
			},
		},
	}
	return runGroup(ctx, e, "audit", cmds, []string{"list"}, args)
}

func handoverTable(hs ...client.Handover) func(*tabwriter.Writer) {
	return func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "ID\tNODE\tFROM\tTO\tSTEP\tSTATUS\tATTEMPTS\tUPDATED\tLAST ERROR")
		for _, h := range hs {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", h.ID, h.Node, orDash(h.From), orDash(h.To),
				h.Step, h.Status, h.Attempts, fmtTime(h.UpdatedAt), orDash(h.LastError))
		}
	}
}

// pickLease returns the lease ID given as the only argument, or the one
// live (active or scheduled) lease of node to tenant, whichever is asked.
func pickLease(ctx context.Context, c *client.Client, args []string, node, tenant string, now time.Time) (int64, error) {
	switch {
	case len(args) == 1 && node == "" && tenant == "":
		return leaseID(args[0])
	case len(args) == 0 && node != "" && tenant != "":
	default:
		return 0, usagef("give a lease ID, or --node and --tenant")
	}
	ls, err := c.Leases(ctx, client.LeaseQuery{Node: node, Tenant: tenant, From: now})
	if err != nil {
		return 0, err
	}
	var live []client.Lease
	for _, l := range ls {
		if l.State == lease.Active || l.State == lease.Scheduled {
			live = append(live, l)
		}
	}
	switch len(live) {
	case 0:
		return 0, fmt.Errorf("%s has no active or scheduled lease of %s", tenant, node)
	case 1:
		return live[0].ID, nil
	}
	ids := make([]string, len(live))
	for i, l := range live {
		ids[i] = strconv.FormatInt(l.ID, 10)
	}
	return 0, fmt.Errorf("%s has %d live leases of %s (%s): give the ID", tenant, len(live), node, strings.Join(ids, ", "))
}
