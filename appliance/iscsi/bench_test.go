package iscsi_test

import (
	crand "crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/malleable-cloud/malleable/appliance/iscsi"
	"github.com/malleable-cloud/malleable/appliance/iscsi/iscsitest"
)

// BenchmarkApply measures Apply against a real tgtd: creating a target
// (target, LUN, serial, account, bind, ACL: 8 tgtadm calls), applying an
// unchanged one (the two listings), and rotating its secret.
func BenchmarkApply(b *testing.B) {
	iscsitest.Require(b, "tgtd", "tgtadm")
	tgtd := iscsitest.Start(b, iscsitest.Options{})
	d := tgtd.Driver()
	ctx := b.Context()
	backing := iscsitest.Backing(b, lunSize)
	target := func(i int) iscsi.Target {
		return iscsi.Target{
			IQN: fmt.Sprintf("iqn.2026-01.cloud.malleable:bench.%d", i), Backing: backing,
			CHAPUser: fmt.Sprintf("bench-%d", i), CHAPSecret: "Secret-0123456", Initiators: []string{node1},
		}
	}
	b.Run("create", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if err := d.Apply(ctx, target(i)); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if err := d.Remove(ctx, target(i).IQN); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
	t := target(0)
	if err := d.Apply(ctx, t); err != nil {
		b.Fatal(err)
	}
	b.Run("unchanged", func(b *testing.B) {
		for b.Loop() {
			if err := d.Apply(ctx, t); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("rotate", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			t.CHAPSecret = fmt.Sprintf("Secret-%07d", i)
			if err := d.Apply(ctx, t); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkReadLUN reads a whole 256 MiB LUN of random data through tgtd
// with CHAP, with qemu-img convert (qemu's libiscsi driver), into a file.
func BenchmarkReadLUN(b *testing.B) {
	iscsitest.Require(b, "tgtd", "tgtadm", "qemu-img")
	tgtd := iscsitest.Start(b, iscsitest.Options{})
	ctx := b.Context()
	const size = 256 << 20
	backing := filepath.Join(b.TempDir(), "full.img")
	buf := make([]byte, size)
	crand.Read(buf)
	if err := os.WriteFile(backing, buf, 0o600); err != nil {
		b.Fatal(err)
	}
	t := iscsi.Target{
		IQN: "iqn.2026-01.cloud.malleable:bench.read", Backing: backing,
		CHAPUser: "bench-read", CHAPSecret: "Secret-0123456", Initiators: []string{node1},
	}
	if err := tgtd.Driver().Apply(ctx, t); err != nil {
		b.Fatal(err)
	}
	l := iscsitest.Login{Portal: tgtd.Portal(), Target: t.IQN, Initiator: node1, User: t.CHAPUser, Secret: t.CHAPSecret}
	dst := filepath.Join(b.TempDir(), "read.img")
	b.SetBytes(size)
	for b.Loop() {
		if err := iscsitest.ReadLUN(ctx, l, dst); err != nil {
			b.Fatal(err)
		}
	}
}
