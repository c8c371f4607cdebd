package storage

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// benchDirEnv names a directory for the benchmark's images when the temp
// dir's filesystem is short of space (8 GiB needs about 9 GiB free).
const benchDirEnv = "MALLEABLE_BENCH_DIR"

// BenchmarkClone times create_disk's copy against image size: Clone on this
// filesystem (ForceCopy: the sparse copy, proportional to the data) side by
// side with a full copy by `cp --sparse=never` (proportional to the
// apparent size), with and without an fsync of the copy, since Clone
// fsyncs before it returns. Images are 64 MiB, 1 GiB and 8 GiB with about
// 5% data (1 MiB every 20 MiB). MB/s is apparent bytes per second. With a
// reflink-capable directory (MALLEABLE_REFLINK_DIR, or the temp dir's own
// filesystem) a reflink row is added. Use -benchtime=3x: an 8 GiB cp takes
// tens of seconds.
func BenchmarkClone(b *testing.B) {
	ctx := context.Background()
	cp, err := exec.LookPath("cp")
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range []int64{64 * mib, 1 << 30, 8 << 30} {
		b.Run(sizeName(size), func(b *testing.B) {
			parent := benchDir(b, size+size/10+256*mib) // a full copy, the data twice, slack
			f, golden := benchImage(b, parent, size, FileOptions{ForceCopy: true})
			b.Run("sparse-copy", func(b *testing.B) {
				b.SetBytes(size)
				for b.Loop() {
					if _, err := f.Clone(ctx, golden, "disks/bench"); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					if err := f.Remove(ctx, "disks/bench"); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
			})
			src, err := f.Path(golden)
			if err != nil {
				b.Fatal(err)
			}
			dst := filepath.Join(parent, "cp.img")
			for _, durable := range []bool{false, true} {
				name := "cp-sparse-never"
				if durable {
					name += "+fsync"
				}
				b.Run(name, func(b *testing.B) {
					b.SetBytes(size)
					for b.Loop() {
						if out, err := exec.Command(cp, "--sparse=never", src, dst).CombinedOutput(); err != nil {
							b.Fatalf("cp: %v: %s", err, out)
						}
						if durable {
							fsyncFile(b, dst)
						}
						b.StopTimer()
						if err := os.Remove(dst); err != nil {
							b.Fatal(err)
						}
						b.StartTimer()
					}
				})
			}
			rdir, ok := benchReflinkDir(b)
			if !ok {
				return
			}
			rf, rgolden := benchImage(b, rdir, size, FileOptions{})
			b.Run("reflink", func(b *testing.B) {
				b.SetBytes(size)
				for b.Loop() {
					v, err := rf.Clone(ctx, rgolden, "disks/bench")
					if err != nil {
						b.Fatal(err)
					}
					if v.CloneMethod != MethodReflink {
						b.Fatalf("clone method %s, want reflink", v.CloneMethod)
					}
					b.StopTimer()
					if err := rf.Remove(ctx, "disks/bench"); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
			})
		})
	}
}

// benchImage opens a File in a new directory under parent and imports a
// golden image of size bytes, 1 MiB of data every 20 MiB, into it.
func benchImage(b *testing.B, parent string, size int64, opts FileOptions) (*File, string) {
	b.Helper()
	dir, err := os.MkdirTemp(parent, "bench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	var extents []extent
	for off := int64(0); off < size; off += 20 * mib {
		extents = append(extents, extent{off, min(mib, size-off)})
	}
	img := filepath.Join(dir, "golden.img")
	writeImage(b, img, size, extents)
	f, _ := newTestFileIn(b, dir, opts)
	if _, err := f.ImportFile(context.Background(), "images/golden", img); err != nil {
		b.Fatal(err)
	}
	if err := os.Remove(img); err != nil {
		b.Fatal(err)
	}
	return f, "images/golden"
}

// benchDir returns a directory with at least need bytes free: the
// benchmark's temp dir, or $MALLEABLE_BENCH_DIR. It skips, saying so, when
// neither has room.
func benchDir(b *testing.B, need int64) string {
	b.Helper()
	dir := b.TempDir()
	if d := os.Getenv(benchDirEnv); d != "" {
		dir = d
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		b.Fatal(err)
	}
	if free := int64(st.Bavail) * st.Bsize; free < need {
		b.Skipf("%s has %s free, %s needed: set %s to a filesystem with room", dir, sizeName(free), sizeName(need), benchDirEnv)
	}
	return dir
}

// benchReflinkDir returns $MALLEABLE_REFLINK_DIR or the temp dir when it
// supports reflink. Unlike the tests, the benchmark never mounts a
// filesystem of its own.
func benchReflinkDir(b *testing.B) (string, bool) {
	b.Helper()
	if d := os.Getenv(reflinkEnv); d != "" {
		if !reflinkWorks(b, d) {
			b.Fatalf("%s=%s has no reflink support", reflinkEnv, d)
		}
		return d, true
	}
	d := b.TempDir()
	return d, reflinkWorks(b, d)
}

func fsyncFile(b *testing.B, path string) {
	b.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
}

func sizeName(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%dMiB", n>>20)
	default:
		return fmt.Sprintf("%dB", n)
	}
}
