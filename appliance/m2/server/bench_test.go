package server_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/iscsi/iscsitest"
)

// BenchmarkLUNRead measures sequential reads of a whole LUN through tgtd:
// qemu-img convert, over one iSCSI session with CHAP, of a 256 MiB disk
// full of data, into a file. The backing file stays in the page cache, so
// this is the target's and the initiator's throughput, not the storage's.
func BenchmarkLUNRead(b *testing.B) {
	const size = 256 << 20
	e := newEnv(b, "")
	path, _ := goldenImage(b, size, "M2-BENCH-READ", 1)
	e.must(http.StatusCreated, http.MethodPost, "/m2/v1/images", "admin", map[string]string{"name": "full", "path": path}, nil)
	d := e.createDisk("acme", "bench", "full")
	_, boot := e.attach("acme", "bench", "n1")
	login := e.login(d.Target.IQN, boot)
	dst := filepath.Join(b.TempDir(), "lun.raw")
	b.SetBytes(size)
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		err := iscsitest.ReadLUN(ctx, login, dst)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		os.Remove(dst)
	}
}

// BenchmarkCreateDisk measures create_disk through Backend.CreateDisk: the
// clone of a sparse image with about 5% data (a sparse copy where the
// filesystem has no reflinks), the CHAP secret and the iSCSI target, and
// then DeleteDisk, which removes them. ns/op covers both; create-ms/op is
// create_disk alone.
func BenchmarkCreateDisk(b *testing.B) {
	for _, size := range []int64{64 << 20, 1 << 30} {
		b.Run(strconv.FormatInt(size>>20, 10)+"MiB", func(b *testing.B) {
			e := newEnv(b, "")
			path, _ := goldenImage(b, size, "M2-BENCH-CREATE", 0.05)
			e.must(http.StatusCreated, http.MethodPost, "/m2/v1/images", "admin", map[string]string{"name": "golden", "path": path}, nil)
			ctx := context.Background()
			var create time.Duration
			for b.Loop() {
				start := time.Now()
				d, err := e.backend.CreateDisk(ctx, "acme", "bench", "image:golden")
				create += time.Since(start)
				if err != nil {
					b.Fatal(err)
				}
				if d.Size != size {
					b.Fatalf("disk of %d bytes, want %d", d.Size, size)
				}
				if err := e.backend.DeleteDisk(ctx, "acme", "bench"); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(create)/float64(time.Millisecond)/float64(b.N), "create-ms/op")
		})
	}
}
