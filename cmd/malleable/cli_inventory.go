package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/malleable-cloud/malleable/appliance/client"
	"github.com/malleable-cloud/malleable/appliance/inventory"
)

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func nodeTable(nodes ...inventory.Node) func(*tabwriter.Writer) {
	return func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "NAME\tMACS\tBMC\tBMC USER\tTENANT BMC ADDRESS\tDESCRIPTION")
		for _, n := range nodes {
			bmc := "-"
			if n.BMC.Host != "" {
				bmc = n.BMC.Address()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, orDash(strings.Join(n.MACs, ",")), bmc, orDash(n.BMC.User),
				orDash(n.TenantBMCAddress), orDash(n.Description))
		}
	}
}

func cmdNode(ctx context.Context, e env, args []string) error {
	var spec client.NodeSpec
	var macs stringList
	var bmc, bmcUser, passwordFile string
	cmds := map[string]*command{
		"add": {
			usage: "node add NAME [--mac MAC]... [--bmc HOST[:PORT] --bmc-user USER --bmc-password-file FILE] [--tenant-bmc-address IPV4] [--description TEXT]",
			nargs: 1,
			flags: func(fs *flag.FlagSet) {
				fs.Var(&macs, "mac", "a MAC address of the node (repeatable)")
				fs.StringVar(&bmc, "bmc", "", "BMC address, host[:port] (IPMI port 623 by default)")
				fs.StringVar(&bmcUser, "bmc-user", "", "BMC user name")
				fs.StringVar(&passwordFile, "bmc-password-file", "", "file holding the BMC password ('-' for standard input); kept in the secret store")
				fs.StringVar(&spec.TenantBMCAddress, "tenant-bmc-address", "", "the node's tenant-facing BMC address (an IPv4 of [nodes] tenant_bmc_range); a free one by default")
				fs.StringVar(&spec.Description, "description", "", "free text")
			},
			run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
				spec.Name, spec.MACs = args[0], macs
				if bmc != "" || bmcUser != "" {
					spec.BMC = &client.BMCSpec{Host: bmc, User: bmcUser}
				}
				if passwordFile != "" {
					if spec.BMC == nil {
						return usagef("--bmc-password-file needs --bmc and --bmc-user")
					}
					pw, err := readSecret(e, passwordFile)
					if err != nil {
						return err
					}
					spec.BMC.Password = pw
				}
				n, err := c.CreateNode(ctx, spec)
				if err != nil {
					return err
				}
				return out.print(n, nodeTable(n))
			},
		},
		"list": {
			usage: "node list",
			run: func(ctx context.Context, c *client.Client, out *printer, _ []string) error {
				ns, err := c.Nodes(ctx)
				if err != nil {
					return err
				}
				return out.print(ns, nodeTable(ns...))
			},
		},
		"show": {
			usage: "node show NAME",
			nargs: 1,
			run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
				n, err := c.Node(ctx, args[0])
				if err != nil {
					return err
				}
				return out.print(n, nodeTable(n))
			},
		},
		"rm": {
			usage: "node rm NAME",
			nargs: 1,
			run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
				if err := c.DeleteNode(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(out.w, "node %s removed\n", args[0])
				return nil
			},
		},
	}
	cmds["power"] = &command{
		usage: "node power NAME [status|on|off|cycle|reset|soft]",
		run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usagef("usage: malleable node power NAME [status|on|off|cycle|reset|soft]")
			}
			if len(args) == 2 && args[1] != "status" {
				if err := c.NodePowerAction(ctx, args[0], args[1]); err != nil {
					return err
				}
			}
			p, err := c.NodePower(ctx, args[0])
			if err != nil {
				return err
			}
			return out.print(p, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "NODE\tPOWER\tHOLDER")
				fmt.Fprintf(tw, "%s\t%s\t%s\n", p.Node, p.Power, orDash(p.Holder))
			})
		},
		nargs: -1,
	}
	cmds["set-bmc-password"] = &command{
		usage: "node set-bmc-password NAME --password-file FILE",
		nargs: 1,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&passwordFile, "password-file", "", "file holding the BMC password ('-' for standard input)")
		},
		run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
			if passwordFile == "" {
				return usagef("node set-bmc-password: --password-file is required")
			}
			pw, err := readSecret(e, passwordFile)
			if err != nil {
				return err
			}
			if err := c.SetBMCPassword(ctx, args[0], pw); err != nil {
				return err
			}
			fmt.Fprintf(out.w, "BMC password of %s stored\n", args[0])
			return nil
		},
	}
	return runGroup(ctx, e, "node", cmds, []string{"add", "list", "show", "rm", "power", "set-bmc-password"}, args)
}

// readSecret reads a password from a file, or standard input for "-",
// without its trailing newline.
func readSecret(e env, path string) (string, error) {
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(io.LimitReader(e.stdin, 4096))
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}
