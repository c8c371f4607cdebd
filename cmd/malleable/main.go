// Command malleable is the Malleable appliance in one static binary: the
// daemon (serve), its configuration checker, and the admin CLI that talks to
// a running daemon over its REST API.
//
// This is the only package that reads flags and the environment.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the command ran and failed
	exitUsage = 2 // bad usage or configuration
)

// usageError marks an error in how the command was called; it exits 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// env is the process's surroundings, passed down so commands stay testable.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	uid            int
}

const topUsage = `malleable: a multi-tenant bare-metal appliance bridging Foreman, M2 and HIL.

Usage: malleable <command> [arguments]

Daemon:
  serve            run the appliance (embedded defaults without --config)
  m2 serve         run the M2 storage backend alone (a separate storage host)
  smart-proxy      run one tenant's Foreman smart-proxy; 'smart-proxy health' checks it,
                   'smart-proxy init' writes a ready one for a tenant
  config check F   validate an appliance.ini; exit 2 listing every problem
  config example   print a commented example appliance.ini
  version          print the version

Admin CLI (talks to a running appliance over its REST API):
  node             add, list, show, rm nodes
  tenant           add, list, show, rm tenants
  lease            add, list, show, cancel, extend leases; handovers, retry
  image            import, list, rm golden images (M2)
  disk             create, list, attach, detach, snapshot tenants' disks (M2)
  audit            show the audit log
  reconcile        now: run a reconcile pass and follow it; show a pass

Run 'malleable <command> --help' for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	e := env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, uid: os.Getuid()}
	code := run(ctx, e, os.Args[1:])
	stop()
	os.Exit(code)
}

func run(ctx context.Context, e env, args []string) int {
	err := dispatch(ctx, e, args)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case isUsage(err):
		fmt.Fprintln(e.stderr, "malleable:", err)
		return exitUsage
	default:
		fmt.Fprintln(e.stderr, "malleable:", err)
		return exitError
	}
}

func isUsage(err error) bool {
	var ue *usageError
	return errors.As(err, &ue)
}

func dispatch(ctx context.Context, e env, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, topUsage)
		return usagef("no command given")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "-h", "--help", "help":
		fmt.Fprint(e.stdout, topUsage)
		return nil
	case "serve":
		return cmdServe(ctx, e, rest)
	case "m2":
		return cmdM2(ctx, e, rest)
	case "smart-proxy":
		return cmdSmartProxy(ctx, e, rest)
	case "version", "--version":
		return cmdVersion(e, rest)
	case "config":
		return cmdConfig(e, rest)
	case "node":
		return cmdNode(ctx, e, rest)
	case "tenant":
		return cmdTenant(ctx, e, rest)
	case "lease":
		return cmdLease(ctx, e, rest)
	case "audit":
		return cmdAudit(ctx, e, rest)
	case "reconcile":
		return cmdReconcile(ctx, e, rest)
	case "image":
		return cmdImage(ctx, e, rest)
	case "disk":
		return cmdDisk(ctx, e, rest)
	}
	fmt.Fprint(e.stderr, topUsage)
	return usagef("unknown command %q", cmd)
}

// parseFlags parses args with fs, allowing flags after positional
// arguments, and returns the positional ones. -h/--help prints the usage and
// returns flag.ErrHelp.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	// The flag package prints the usage itself on -h and on errors: quiet
	// it, and print the usage once, for -h only.
	out := fs.Output()
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.SetOutput(out)
				fs.Usage()
				return nil, err
			}
			return nil, usagef("%s: %v", fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// newFlagSet returns a flag set whose usage prints to w.
func newFlagSet(w io.Writer, name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(w)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: malleable %s\n\nFlags:\n", usage)
		fs.PrintDefaults()
	}
	return fs
}
