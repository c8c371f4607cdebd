package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/malleable-cloud/malleable/appliance/client"
	"github.com/malleable-cloud/malleable/appliance/inventory"
)

func tenantTable(ts ...inventory.Tenant) func(*tabwriter.Writer) {
	return func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "NAME\tSTATE\tFOREMAN\tDESCRIPTION")
		for _, t := range ts {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Name, t.State, orDash(t.ForemanURL), orDash(t.Description))
		}
	}
}

func jobTable(js ...inventory.TenantJob) func(*tabwriter.Writer) {
	return func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "ID\tKIND\tSTATE\tSTARTED\tFINISHED\tERROR")
		for _, j := range js {
			finished := "-"
			if !j.FinishedAt.IsZero() {
				finished = j.FinishedAt.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.Kind, j.State, j.CreatedAt.Format(time.RFC3339), finished, orDash(j.Error))
		}
	}
}

func cmdTenant(ctx context.Context, e env, args []string) error {
	var spec client.TenantSpec
	var noWait, followJobFlag bool
	var off inventory.OffboardOptions
	waitFlag := func(fs *flag.FlagSet) {
		fs.BoolVar(&noWait, "no-wait", false, "start the job and return its ID, without following its steps")
		fs.BoolFunc("wait", "follow the job's steps until it ends (the default)", func(string) error { noWait = false; return nil })
	}
	// follow prints a started job, or follows it to its end.
	follow := func(ctx context.Context, c *client.Client, out *printer, job inventory.TenantJob) error {
		if noWait {
			if out.json {
				return out.print(job, nil)
			}
			fmt.Fprintf(out.w, "%s job %d of %s started; follow it with: malleable tenant job %s %d\n", job.Kind, job.ID, job.Tenant, job.Tenant, job.ID)
			return nil
		}
		return followJob(ctx, c, out, job)
	}
	cmds := map[string]*command{
		"add": {
			usage: "tenant add NAME [--foreman-url URL] [--description TEXT] [--no-wait]",
			nargs: 1,
			long:  true,
			flags: func(fs *flag.FlagSet) {
				fs.StringVar(&spec.ForemanURL, "foreman-url", "", "the tenant's own external Foreman, if it brings one")
				fs.StringVar(&spec.Description, "description", "", "free text")
				waitFlag(fs)
			},
			run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
				spec.Name = args[0]
				t, err := c.CreateTenant(ctx, spec)
				if err != nil {
					return err
				}
				if t.Job == nil {
					return out.print(t.Tenant, tenantTable(t.Tenant))
				}
				if !out.json {
					fmt.Fprintf(out.w, "tenant %s added; onboarding (job %d)\n", t.Name, t.Job.ID)
				}
				return follow(ctx, c, out, *t.Job)
			},
		},
		"onboard": {
			usage: "tenant onboard NAME [--no-wait]   (again: finishes a half-done onboarding)",
			nargs: 1,
			long:  true,
			flags: waitFlag,
			run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
				job, err := c.Onboard(ctx, args[0])
				if err != nil {
					return err
				}
				return follow(ctx, c, out, job)
			},
		},
		"offboard": {
			usage: "tenant offboard NAME [--keep-secrets] [--keep-disks] [--no-wait]",
			nargs: 1,
			long:  true,
			flags: func(fs *flag.FlagSet) {
				fs.BoolVar(&off.KeepSecrets, "keep-secrets", false, "keep the tenant's secrets (passwords, encryption key) for a later onboarding")
				fs.BoolVar(&off.KeepDisks, "keep-disks", false, "keep the tenant's M2 disks and snapshots")
				waitFlag(fs)
			},
			run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
				job, err := c.Offboard(ctx, args[0], off)
				if err != nil {
					return err
				}
				return follow(ctx, c, out, job)
			},
		},
		"jobs": {
			usage: "tenant jobs NAME",
			nargs: 1,
			run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
				js, err := c.TenantJobs(ctx, args[0])
				if err != nil {
					return err
				}
				return out.print(js, jobTable(js...))
			},
		},
		"job": {
			usage: "tenant job NAME ID [--follow]",
			nargs: 2,
			long:  true,
			flags: func(fs *flag.FlagSet) {
				fs.BoolVar(&followJobFlag, "follow", false, "follow a running job's steps until it ends")
			},
			run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
				id, err := strconv.ParseInt(args[1], 10, 64)
				if err != nil || id < 1 {
					return fmt.Errorf("job ID %q is not a positive integer", args[1])
				}
				job, err := c.TenantJob(ctx, args[0], id)
				if err != nil {
					return err
				}
				if !followJobFlag || job.State != inventory.JobRunning {
					return out.print(job, func(tw *tabwriter.Writer) { printSteps(tw, job, time.Now()) })
				}
				return followJob(ctx, c, out, job)
			},
		},
		"credentials": {
			usage: "tenant credentials NAME   (the tenant's Foreman login, shown once)",
			nargs: 1,
			run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
				l, err := c.ForemanLogin(ctx, args[0])
				if err != nil {
					return err
				}
				if out.json {
					return out.print(l, nil)
				}
				fmt.Fprintf(out.w, "Foreman:  %s\nUsername: %s\nPassword: %s\n", orDash(l.URL), l.Username, l.Password)
				fmt.Fprintf(e.stderr, "shown once: give it to %s's administrator over a safe channel\n", args[0])
				return nil
			},
		},
	}
	addTenantBasics(cmds, e)
	return runGroup(ctx, e, "tenant", cmds, []string{"add", "list", "show", "rm", "token", "onboard", "offboard", "jobs", "job", "credentials"}, args)
}

// addTenantBasics adds the tenant record's commands: list, show, rm, token.
func addTenantBasics(cmds map[string]*command, e env) {
	cmds["list"] = &command{
		usage: "tenant list",
		run: func(ctx context.Context, c *client.Client, out *printer, _ []string) error {
			ts, err := c.Tenants(ctx)
			if err != nil {
				return err
			}
			return out.print(ts, tenantTable(ts...))
		},
	}
	cmds["show"] = &command{
		usage: "tenant show NAME",
		nargs: 1,
		run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
			t, err := c.Tenant(ctx, args[0])
			if err != nil {
				return err
			}
			return out.print(t, tenantTable(t))
		},
	}
	cmds["rm"] = &command{
		usage: "tenant rm NAME",
		nargs: 1,
		run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
			if err := c.DeleteTenant(ctx, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(out.w, "tenant %s removed\n", args[0])
			return nil
		},
	}
	cmds["token"] = &command{
		usage: "tenant token NAME",
		nargs: 1,
		run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
			tok, err := c.TenantToken(ctx, args[0])
			if err != nil {
				return err
			}
			if out.json {
				return out.print(map[string]string{"tenant": args[0], "token": tok}, nil)
			}
			fmt.Fprintf(out.w, "%s\n", tok)
			fmt.Fprintf(e.stderr, "broker token for %s: shown once, replaces any earlier one; give it to the tenant's smart-proxy\n", args[0])
			return nil
		},
	}
}

// jobPoll is how often a followed job is read.
const jobPoll = 500 * time.Millisecond

// followJob prints each step of a job as it starts and ends, with its
// elapsed time, until the job ends; a failed job is an error.
func followJob(ctx context.Context, c *client.Client, out *printer, job inventory.TenantJob) error {
	printed := map[string]inventory.JobState{}
	for {
		if !out.json {
			for _, st := range job.Steps {
				if st.State == inventory.JobPending || printed[st.Name] == st.State {
					continue
				}
				printed[st.Name] = st.State
				printStep(out.w, st, time.Now())
			}
		}
		if job.State != inventory.JobRunning {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(jobPoll):
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		next, err := c.TenantJob(rctx, job.Tenant, job.ID)
		cancel()
		if err != nil {
			return fmt.Errorf("follow job %d: %w", job.ID, err)
		}
		job = next
	}
	if out.json {
		if err := out.print(job, nil); err != nil {
			return err
		}
	} else {
		took := job.FinishedAt.Sub(job.CreatedAt).Round(100 * time.Millisecond)
		fmt.Fprintf(out.w, "%s of %s %s in %s\n", job.Kind, job.Tenant, job.State, took)
	}
	if job.State == inventory.JobFailed {
		return fmt.Errorf("%s of %s failed: %s (run `malleable tenant %s %s` again to finish it)", job.Kind, job.Tenant, job.Error, job.Kind, job.Tenant)
	}
	return nil
}

// printStep writes one step line: state, name, elapsed, detail.
func printStep(w io.Writer, st inventory.JobStep, now time.Time) {
	end := st.FinishedAt
	if end.IsZero() {
		end = now
	}
	took := "-"
	if !st.StartedAt.IsZero() {
		took = end.Sub(st.StartedAt).Round(100 * time.Millisecond).String()
	}
	mark := map[inventory.JobState]string{inventory.JobRunning: "...", inventory.JobDone: "ok ", inventory.JobFailed: "ERR", inventory.JobPending: "   "}[st.State]
	fmt.Fprintf(w, "  [%s] %-13s %8s  %s\n", mark, st.Name, took, st.Detail)
}

// printSteps writes a job's steps as a table.
func printSteps(tw *tabwriter.Writer, job inventory.TenantJob, now time.Time) {
	fmt.Fprintf(tw, "job %d: %s of %s, %s\t\n", job.ID, job.Kind, job.Tenant, job.State)
	for _, st := range job.Steps {
		printStep(tw, st, now)
	}
	if job.Error != "" {
		fmt.Fprintf(tw, "error: %s\t\n", job.Error)
	}
}
