package boottest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/templates"
)

func TestScratch(t *testing.T) {
	g := startTGTD(t)
	tg := target{TID: 1, LUN: 10, IQN: "iqn.2026-11.cloud.malleable:s", Backing: GoldenImage(t, "", 1<<20, "SCRATCH-OK"),
		CHAPUser: "u1", CHAPSecret: "right-secret-Zt8Kq2xVb9", Initiator: "iqn.2026-11.cloud.malleable:n"}
	g.newTarget(tg)
	for name, m := range map[string]func(*templates.SANBoot){
		"user": func(s *templates.SANBoot) { s.CHAPUser = "zz" },
		"acl":  func(s *templates.SANBoot) { s.InitiatorIQN = "iqn.2026-11.cloud.malleable:zz" },
		"dec":  nil,
	} {
		script := sanboot(t, g, tg, m)
		if name == "dec" {
			script = strings.Replace(script, ":a:iqn", ":10:iqn", 1)
		}
		n := BootISCSI(t, NodeOptions{Script: script})
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		poll(ctx, func() bool { return strings.Count(n.Serial(), "Could not open SAN") >= 2 }, func() string { return "" })
		cancel()
		t.Logf("%s: serial:\n%s\ntgtd:\n%s", name, tail(n.Serial())[len(tail(n.Serial()))-400:], g.log())
		n.Stop()
	}
}
