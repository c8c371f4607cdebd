package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/malleable-cloud/malleable/appliance"
	"github.com/malleable-cloud/malleable/appliance/client"
	"github.com/malleable-cloud/malleable/appliance/httpx"
)

// conn holds the flags every admin CLI command shares: where the appliance
// is, how to authenticate, and how to print.
type conn struct {
	// server is the appliance URL; after client() the one it resolved to.
	server, token, tokenFile, config, output string
}

func (c *conn) register(fs *flag.FlagSet, e env) {
	fs.StringVar(&c.server, "server", e.getenv("MALLEABLE_SERVER"), "appliance URL (env MALLEABLE_SERVER); default from --config, else http://"+appliance.DefaultListen)
	fs.StringVar(&c.token, "token", "", "removed: use --token-file or env MALLEABLE_TOKEN (a token in argv is visible in /proc)")
	fs.StringVar(&c.tokenFile, "token-file", "", "file holding the admin token; default from --config or the default data directory")
	fs.StringVar(&c.config, "config", e.getenv("MALLEABLE_CONFIG"), "appliance.ini to take the address and token file from (env MALLEABLE_CONFIG)")
	fs.StringVar(&c.output, "o", "table", "output: table or json")
}

// client resolves the server and token: flags, then environment, then the
// config file (or the embedded defaults) that `malleable serve` would use.
func (c *conn) client(e env) (*client.Client, error) {
	if c.output != "table" && c.output != "json" {
		return nil, usagef("-o must be table or json, got %q", c.output)
	}
	if c.token != "" {
		// A token in argv is readable by every local user in
		// /proc/<pid>/cmdline (and lands in shell history).
		return nil, usagef("--token is not accepted: a secret on the command line is visible to every local user; use --token-file FILE or the environment variable MALLEABLE_TOKEN")
	}
	server, token := c.server, e.getenv("MALLEABLE_TOKEN")
	if server == "" || (token == "" && c.tokenFile == "") {
		cfg, err := loadConfig(e, c.config, nil)
		if err != nil {
			return nil, err
		}
		if server == "" {
			server = "http://" + dialable(cfg.Appliance.Listen)
		}
		if c.tokenFile == "" {
			c.tokenFile = cfg.Appliance.AdminTokenFile
		}
	}
	if !strings.Contains(server, "://") {
		server = "http://" + server
	}
	c.server = server
	if token == "" {
		t, err := appliance.ReadToken(c.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("%w (is the appliance running here? pass --token-file or MALLEABLE_TOKEN)", err)
		}
		token = t
	}
	return client.New(server, token), nil
}

// dialable turns a listen address into one a client can dial: a wildcard
// host becomes loopback.
func dialable(listen string) string {
	for _, wild := range []string{"0.0.0.0:", "[::]:", ":"} {
		if rest, ok := strings.CutPrefix(listen, wild); ok {
			return "127.0.0.1:" + rest
		}
	}
	return listen
}

// command is one admin subcommand: its usage line and body.
type command struct {
	usage string
	flags func(fs *flag.FlagSet)
	run   func(ctx context.Context, c *client.Client, out *printer, args []string) error
	nargs int // exact positional arguments wanted
	// long commands follow work in the appliance for as long as it takes:
	// no overall deadline, each request has its own.
	long bool
}

// runGroup dispatches a command group such as `node add`.
func runGroup(ctx context.Context, e env, group string, cmds map[string]*command, order []string, args []string) error {
	return runGroupTimeout(ctx, e, group, cmds, order, args, 60*time.Second)
}

// runGroupTimeout is runGroup with a deadline for long operations.
func runGroupTimeout(ctx context.Context, e env, group string, cmds map[string]*command, order []string, args []string, timeout time.Duration) error {
	groupUsage := func() string {
		var b strings.Builder
		fmt.Fprintf(&b, "Usage: malleable %s <subcommand>\n\nSubcommands:\n", group)
		for _, name := range order {
			fmt.Fprintf(&b, "  malleable %s\n", cmds[name].usage)
		}
		return b.String()
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(e.stdout, groupUsage())
		if len(args) == 0 {
			return usagef("%s: no subcommand given", group)
		}
		return nil
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprint(e.stderr, groupUsage())
		return usagef("%s: unknown subcommand %q", group, args[0])
	}
	fs := newFlagSet(e.stdout, group+" "+args[0], cmd.usage)
	var cn conn
	cn.register(fs, e)
	if cmd.flags != nil {
		cmd.flags(fs)
	}
	pos, err := parseFlags(fs, args[1:])
	if err != nil {
		return err
	}
	if cmd.nargs >= 0 && len(pos) != cmd.nargs {
		return usagef("usage: malleable %s", cmd.usage)
	}
	cl, err := cn.client(e)
	if err != nil {
		return err
	}
	if !cmd.long {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return explain(cn.server, cmd.run(ctx, cl, &printer{w: e.stdout, json: cn.output == "json"}, pos))
}

// explain turns API errors into messages for a person at a terminal, and
// says what to do when no appliance answers at server.
func explain(server string, err error) error {
	var ae *httpx.StatusError
	switch {
	case errors.As(err, &ae):
		return fmt.Errorf("%s (HTTP %d)", ae.Message, ae.Status)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("no appliance answers at %s: start it with scripts/run.sh (or `malleable serve`), "+
			"or point the CLI at a running one with --config FILE or --server URL (%w)", server, err)
	}
	return err
}

// printer writes results as a table or as JSON.
type printer struct {
	w    io.Writer
	json bool
}

// print writes v as indented JSON, or calls table with a tab writer.
func (p *printer) print(v any, table func(tw *tabwriter.Writer)) error {
	if p.json || table == nil {
		enc := json.NewEncoder(p.w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

// parseWhen accepts an RFC 3339 time, "now", or "+DURATION" from now.
func parseWhen(flagName, s string, now time.Time) (string, error) {
	switch {
	case s == "":
		return "", nil
	case s == "now":
		return now.UTC().Format(time.RFC3339), nil
	case strings.HasPrefix(s, "+"):
		d, err := time.ParseDuration(s[1:])
		if err != nil {
			return "", usagef("--%s %q: want RFC 3339, now or +DURATION such as +2h", flagName, s)
		}
		return now.Add(d).UTC().Format(time.RFC3339), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return "", usagef("--%s %q: want RFC 3339 (2026-12-01T09:00:00Z), now or +DURATION", flagName, s)
	}
	return t.UTC().Format(time.RFC3339), nil
}

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
