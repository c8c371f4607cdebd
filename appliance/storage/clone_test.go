package storage

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

const mib = 1 << 20

// blocksOf is the space extents take in whole 4 KiB blocks.
func blocksOf(extents []extent) int64 {
	var n int64
	for _, e := range extents {
		first, end := e.off/blockSize, (e.off+e.len+blockSize-1)/blockSize
		n += (end - first) * blockSize
	}
	return n
}

func TestCloneSparse(t *testing.T) {
	ctx := context.Background()
	// The 64 MiB image: aligned and unaligned runs of data, one ending the
	// image, the rest holes.
	testExtents := []extent{
		{0, mib},
		{10*mib + 4096, 256 << 10},
		{33*mib + 7, 100_000},
		{64*mib - 4096, 4096},
	}
	parent := t.TempDir()
	golden := filepath.Join(parent, "golden.img")
	want := writeImage(t, golden, 64*mib, testExtents)
	data := blocksOf(testExtents)
	wantMethod := MethodSparseCopy
	if reflinkWorks(t, parent) {
		wantMethod = MethodReflink
	}
	tests := map[string]struct {
		opts       FileOptions
		wantMethod string
	}{
		"force copy": {opts: FileOptions{ForceCopy: true}, wantMethod: MethodSparseCopy},
		"default":    {opts: FileOptions{}, wantMethod: wantMethod}, // falls back where there is no reflink
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			f, _ := newTestFileIn(t, t.TempDir(), tt.opts)
			img, err := f.ImportFile(ctx, "images/golden", golden)
			if err != nil {
				t.Fatal(err)
			}
			if img.CloneMethod != tt.wantMethod {
				t.Errorf("ImportFile method = %q, want %q", img.CloneMethod, tt.wantMethod)
			}
			v, err := f.Clone(ctx, "images/golden", "disks/acme.web-1")
			if err != nil {
				t.Fatal(err)
			}
			if v.Name != "disks/acme.web-1" || v.Size != 64*mib || v.CloneMethod != tt.wantMethod {
				t.Errorf("Clone = %+v, want 64 MiB by %s", v, tt.wantMethod)
			}
			// What the filesystem reports once the clone is durable (a
			// fresh open and fstat), which Clone must have reported too.
			st, err := f.Stat(ctx, "disks/acme.web-1")
			if err != nil {
				t.Fatal(err)
			}
			if st != v {
				t.Errorf("Stat = %+v, Clone returned %+v", st, v)
			}
			t.Logf("clone: %d bytes apparent, %d allocated, %d in data blocks", st.Size, st.Allocated, data)
			// Holes preserved: the clone holds the data blocks and little
			// more (at most a few blocks of extent metadata).
			if st.Allocated < data || st.Allocated > data+64<<10 {
				t.Errorf("clone allocates %d bytes, want about the %d bytes of data (image is %d)", st.Allocated, data, st.Size)
			}
			if got, err := f.Checksum(ctx, "disks/acme.web-1"); err != nil || got != want {
				t.Errorf("Checksum = %s, %v; want %s", got, err, want)
			}
			p, err := f.Path("disks/acme.web-1")
			if err != nil {
				t.Fatal(err)
			}
			if got := fileSum(t, p); got != want {
				t.Errorf("backing file SHA-256 = %s, want %s", got, want)
			}
		})
	}
}

func TestCloneErrors(t *testing.T) {
	ctx := context.Background()
	f, root := newTestFile(t, FileOptions{ForceCopy: true})
	for _, n := range []string{"images/golden", "disks/taken", "scratch"} {
		if _, err := f.Import(ctx, n, newPattern(n, 3*mib), -1); err != nil {
			t.Fatal(err)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	tests := map[string]struct {
		ctx      context.Context
		src, dst string
		want     error
	}{
		"missing source":       {ctx: ctx, src: "images/none", dst: "disks/new", want: ErrNotFound},
		"missing namespace":    {ctx: ctx, src: "nothing/none", dst: "disks/new", want: ErrNotFound},
		"namespace as source":  {ctx: ctx, src: "images", dst: "disks/new", want: ErrNotFound},
		"taken destination":    {ctx: ctx, src: "images/golden", dst: "disks/taken", want: ErrExists},
		"onto itself":          {ctx: ctx, src: "images/golden", dst: "images/golden", want: ErrExists},
		"onto a namespace":     {ctx: ctx, src: "images/golden", dst: "disks", want: ErrExists},
		"under a volume":       {ctx: ctx, src: "images/golden", dst: "scratch/x", want: ErrExists},
		"bad destination":      {ctx: ctx, src: "images/golden", dst: "disks/../x", want: ErrInvalidName},
		"cancelled beforehand": {ctx: cancelled, src: "images/golden", dst: "disks/new", want: context.Canceled},
	}
	before := tree(t, root)
	sum, err := f.Checksum(ctx, "disks/taken")
	if err != nil {
		t.Fatal(err)
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := f.Clone(tt.ctx, tt.src, tt.dst); !errors.Is(err, tt.want) {
				t.Fatalf("Clone(%s, %s) = %v, want %v", tt.src, tt.dst, err, tt.want)
			}
			if after := tree(t, root); !slices.Equal(before, after) {
				t.Errorf("files changed:\nbefore %q\nafter  %q", before, after)
			}
		})
	}
	if got, err := f.Checksum(ctx, "disks/taken"); err != nil || got != sum {
		t.Errorf("taken destination changed: %s, %v", got, err)
	}
}

// TestCloneConcurrent races 20 clones to one name: exactly one wins and the
// others get ErrExists. Then 20 clones to distinct names all succeed.
func TestCloneConcurrent(t *testing.T) {
	ctx := context.Background()
	parent := t.TempDir()
	golden := filepath.Join(parent, "golden.img")
	want := writeImage(t, golden, 32*mib, []extent{{0, 4 * mib}, {20 * mib, 4 * mib}})
	f, root := newTestFileIn(t, parent, FileOptions{ForceCopy: true})
	if _, err := f.ImportFile(ctx, "images/golden", golden); err != nil {
		t.Fatal(err)
	}

	const n = 20
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = f.Clone(ctx, "images/golden", "disks/web-1") })
	}
	wg.Wait()
	wins := 0
	for i, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, ErrExists):
			t.Errorf("clone %d: %v, want nil or ErrExists", i, err)
		}
	}
	if wins != 1 {
		t.Errorf("%d clones won, want exactly 1", wins)
	}
	if got, err := f.Checksum(ctx, "disks/web-1"); err != nil || got != want {
		t.Errorf("winner's content: %s, %v; want %s", got, err, want)
	}

	for i := range n {
		wg.Go(func() { _, errs[i] = f.Clone(ctx, "images/golden", "disks/web-"+string(rune('a'+i))) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("clone to a distinct name %d: %v", i, err)
		}
	}
	vols, err := f.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(vols) != 2+n {
		t.Errorf("%d volumes, want %d", len(vols), 2+n)
	}
	if left := tempEntries(t, root); len(left) != 0 {
		t.Errorf("temp dir = %v, want empty", left)
	}
}

// TestCloneCancelled cancels a copy after a few of its 16 chunks: no
// volume appears and the partial copy is gone.
func TestCloneCancelled(t *testing.T) {
	parent := t.TempDir()
	golden := filepath.Join(parent, "golden.img")
	writeImage(t, golden, 64*mib, []extent{{8 * mib, 16 * mib}})
	f, root := newTestFileIn(t, parent, FileOptions{ForceCopy: true})
	if _, err := f.ImportFile(context.Background(), "images/golden", golden); err != nil {
		t.Fatal(err)
	}
	before := tree(t, root)

	ctx := newCancelAfter(5)
	_, err := f.Clone(ctx, "images/golden", "disks/web-1")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Clone = %v, want context.Canceled", err)
	}
	if calls := ctx.calls.Load(); calls < 4 {
		t.Errorf("context checked %d times: the copy did not start", calls)
	}
	if _, err := f.Stat(context.Background(), "disks/web-1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat after cancelled Clone = %v, want ErrNotFound", err)
	}
	if after := tree(t, root); !slices.Equal(before, after) {
		t.Errorf("files changed:\nbefore %q\nafter  %q", before, after)
	}
}

func TestImportFileErrors(t *testing.T) {
	ctx := context.Background()
	parent := t.TempDir()
	f, root := newTestFileIn(t, parent, FileOptions{})
	src := filepath.Join(parent, "src.img")
	if err := os.WriteFile(src, []byte("image"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ImportFile(ctx, "images/taken", src); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		name, path string
		want       error  // nil: any error
		wantText   string // substring
	}{
		"missing file":  {name: "images/x", path: filepath.Join(parent, "none"), want: fs.ErrNotExist},
		"directory":     {name: "images/x", path: parent, wantText: "not a regular file"},
		"taken name":    {name: "images/taken", path: src, want: ErrExists},
		"invalid name":  {name: "images/X", path: src, want: ErrInvalidName},
		"relative junk": {name: "images/x", path: "", want: fs.ErrNotExist},
	}
	before := tree(t, root)
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := f.ImportFile(ctx, tt.name, tt.path)
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) ||
				(tt.wantText != "" && !contains(err, tt.wantText)) {
				t.Fatalf("ImportFile(%s, %q) = %v, want %v %q", tt.name, tt.path, err, tt.want, tt.wantText)
			}
			if after := tree(t, root); !slices.Equal(before, after) {
				t.Errorf("files changed:\nbefore %q\nafter  %q", before, after)
			}
		})
	}
}
