package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/malleable-cloud/malleable/appliance/client"
	"github.com/malleable-cloud/malleable/appliance/m2"
)

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func imageTable(imgs ...m2.Image) func(*tabwriter.Writer) {
	return func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "NAME\tSIZE\tALLOCATED\tSHA256")
		for _, i := range imgs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.16s…\n", i.Name, humanBytes(i.Size), humanBytes(i.Allocated), i.SHA256)
		}
	}
}

func cmdImage(ctx context.Context, e env, args []string) error {
	var file, upload string
	cmds := map[string]*command{
		"import": {
			usage: "image import NAME (--file PATH-ON-APPLIANCE | --upload LOCAL-FILE)",
			nargs: 1,
			flags: func(fs *flag.FlagSet) {
				fs.StringVar(&file, "file", "", "absolute path of the image file on the appliance (cloned or sparse-copied there)")
				fs.StringVar(&upload, "upload", "", "a local raw image file to stream to the appliance")
			},
			run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
				var img m2.Image
				var err error
				switch {
				case (file == "") == (upload == ""):
					return usagef("image import: give exactly one of --file or --upload")
				case file != "":
					abs, aerr := filepath.Abs(file)
					if aerr != nil {
						return aerr
					}
					img, err = c.WithTimeout(time.Hour).M2().ImportImage(ctx, args[0], abs)
				default:
					f, oerr := os.Open(upload)
					if oerr != nil {
						return oerr
					}
					defer f.Close()
					fi, serr := f.Stat()
					if serr != nil {
						return serr
					}
					fmt.Fprintf(e.stderr, "uploading %s (%s)...\n", upload, humanBytes(fi.Size()))
					img, err = c.WithTimeout(time.Hour).M2().UploadImage(ctx, args[0], f, fi.Size())
				}
				if err != nil {
					return err
				}
				return out.print(img, imageTable(img))
			},
		},
		"list": {
			usage: "image list",
			run: func(ctx context.Context, c *client.Client, out *printer, _ []string) error {
				imgs, err := c.M2().Images(ctx)
				if err != nil {
					return err
				}
				return out.print(imgs, imageTable(imgs...))
			},
		},
		"rm": {
			usage: "image rm NAME",
			nargs: 1,
			run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
				if err := c.M2().RemoveImage(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(out.w, "image %s removed\n", args[0])
				return nil
			},
		},
	}
	return runGroupTimeout(ctx, e, "image", cmds, []string{"import", "list", "rm"}, args, 2*time.Hour)
}

func diskTable(ds ...m2.Disk) func(*tabwriter.Writer) {
	return func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "PROJECT\tNAME\tSOURCE\tSIZE\tALLOCATED\tNODE\tIQN\tPORTAL\tCHAP USER")
		for _, d := range ds {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Project, d.Name, d.Source, humanBytes(d.Size),
				humanBytes(d.Allocated), orDash(d.Node), d.Target.IQN, d.Target.Portal, d.Target.CHAPUser)
		}
	}
}

func cmdDisk(ctx context.Context, e env, args []string) error {
	var image, snapshot, node string
	cmds := map[string]*command{
		"create": {
			usage: "disk create PROJECT NAME (--image IMAGE | --snapshot SNAPSHOT)",
			nargs: 2,
			flags: func(fs *flag.FlagSet) {
				fs.StringVar(&image, "image", "", "golden image to clone")
				fs.StringVar(&snapshot, "snapshot", "", "one of the project's snapshots to clone")
			},
			run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
				d, err := c.M2().CreateDisk(ctx, args[0], args[1], image, snapshot)
				if err != nil {
					return err
				}
				return out.print(d, diskTable(d))
			},
		},
		"list": {
			usage: "disk list PROJECT",
			nargs: 1,
			run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
				ds, err := c.M2().Disks(ctx, args[0])
				if err != nil {
					return err
				}
				return out.print(ds, diskTable(ds...))
			},
		},
		"show": {
			usage: "disk show PROJECT NAME",
			nargs: 2,
			run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
				d, err := c.M2().Disk(ctx, args[0], args[1])
				if err != nil {
					return err
				}
				return out.print(d, diskTable(d))
			},
		},
		"rm": {
			usage: "disk rm PROJECT NAME",
			nargs: 2,
			run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
				if err := c.M2().DeleteDisk(ctx, args[0], args[1]); err != nil {
					return err
				}
				fmt.Fprintf(out.w, "disk %s/%s removed\n", args[0], args[1])
				return nil
			},
		},
		"attach": {
			usage: "disk attach PROJECT NAME --node NODE",
			nargs: 2,
			flags: func(fs *flag.FlagSet) { fs.StringVar(&node, "node", "", "node that boots from the disk (required)") },
			run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
				if node == "" {
					return usagef("disk attach: --node is required")
				}
				a, err := c.M2().Attach(ctx, args[0], args[1], node)
				if err != nil {
					return err
				}
				return out.print(a, func(tw *tabwriter.Writer) {
					fmt.Fprintln(tw, "DISK\tNODE\tINITIATOR\tBOOT SCRIPT")
					fmt.Fprintf(tw, "%s\t%s\t%s\t/m2/v1/boot/%s\n", a.Disk, a.Node, a.Initiator, a.BootToken)
				})
			},
		},
		"detach": {
			usage: "disk detach PROJECT NAME",
			nargs: 2,
			run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
				if err := c.M2().Detach(ctx, args[0], args[1]); err != nil {
					return err
				}
				fmt.Fprintf(out.w, "disk %s/%s detached\n", args[0], args[1])
				return nil
			},
		},
		"boot-script": {
			usage: "disk boot-script PROJECT NAME",
			nargs: 2,
			run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
				s, err := c.M2().DiskBootScript(ctx, args[0], args[1])
				if err != nil {
					return err
				}
				_, err = out.w.Write(s)
				return err
			},
		},
		"snapshot": {
			usage: "disk snapshot PROJECT DISK SNAPSHOT-NAME",
			nargs: 3,
			run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
				s, err := c.M2().CreateSnapshot(ctx, args[0], args[1], args[2])
				if err != nil {
					return err
				}
				return out.print(s, snapshotTable(s))
			},
		},
		"snapshots": {
			usage: "disk snapshots PROJECT",
			nargs: 1,
			run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
				ss, err := c.M2().Snapshots(ctx, args[0])
				if err != nil {
					return err
				}
				return out.print(ss, snapshotTable(ss...))
			},
		},
		"rm-snapshot": {
			usage: "disk rm-snapshot PROJECT SNAPSHOT-NAME",
			nargs: 2,
			run: func(ctx context.Context, c *client.Client, out *printer, args []string) error {
				if err := c.M2().RemoveSnapshot(ctx, args[0], args[1]); err != nil {
					return err
				}
				fmt.Fprintf(out.w, "snapshot %s/%s removed\n", args[0], args[1])
				return nil
			},
		},
	}
	return runGroupTimeout(ctx, e, "disk", cmds, []string{"create", "list", "show", "rm", "attach", "detach", "boot-script", "snapshot", "snapshots", "rm-snapshot"}, args, 30*time.Minute)
}

func snapshotTable(ss ...m2.Snapshot) func(*tabwriter.Writer) {
	return func(tw *tabwriter.Writer) {
		fmt.Fprintln(tw, "PROJECT\tNAME\tDISK\tSIZE\tCREATED")
		for _, s := range ss {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Project, s.Name, s.Disk, humanBytes(s.Size), fmtTime(s.CreatedAt))
		}
	}
}
