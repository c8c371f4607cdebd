package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// newPattern returns a reader of n pseudo-random bytes seeded by s.
func newPattern(s string, n int) io.Reader {
	return bytes.NewReader(randomBytes(byte(len(s)), n))
}

func contains(err error, s string) bool { return err != nil && strings.Contains(err.Error(), s) }

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func TestImport(t *testing.T) {
	ctx := context.Background()
	f, root := newTestFile(t, FileOptions{})
	if _, err := f.Import(ctx, "images/taken", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}

	// 1 MiB of data, 20 MiB of zeros, 5,000 bytes of data straddling two
	// blocks, then zeros to an unaligned end.
	sparse := slices.Concat(
		randomBytes(1, mib), make([]byte, 20*mib),
		make([]byte, 100), randomBytes(2, 5000), make([]byte, 3*mib+123))
	sparseData := int64(mib + 2*blockSize)

	tests := map[string]struct {
		name          string
		src           io.Reader
		size          int64
		want          []byte // content of the new volume
		wantAllocated int64  // at most this many bytes on disk
		wantErr       error  // sentinel; nil with wantText: any error
		wantText      string
	}{
		"zero runs become holes": {name: "images/sparse", src: bytes.NewReader(sparse), size: int64(len(sparse)),
			want: sparse, wantAllocated: sparseData},
		"size unknown": {name: "images/stream", src: bytes.NewReader(sparse), size: -1,
			want: sparse, wantAllocated: sparseData},
		"all zeros": {name: "images/zeros", src: bytes.NewReader(make([]byte, 10*mib)), size: 10 * mib,
			want: make([]byte, 10*mib), wantAllocated: 0},
		"empty":        {name: "images/empty", src: strings.NewReader(""), size: 0, want: []byte{}},
		"small reads":  {name: "images/small", src: iotest.OneByteReader(strings.NewReader("abc")), size: 3, want: []byte("abc"), wantAllocated: blockSize},
		"source short": {name: "images/short", src: strings.NewReader("abc"), size: 4, wantErr: io.ErrUnexpectedEOF, wantText: "ended after 3 of 4"},
		"source long":  {name: "images/long", src: strings.NewReader("abcde"), size: 4, wantText: "longer than 4 bytes"},
		"source fails": {name: "images/fail", src: io.MultiReader(bytes.NewReader(sparse[:2*mib]), iotest.ErrReader(errors.New("disk on fire"))),
			size: -1, wantText: "disk on fire"},
		"name taken":   {name: "images/taken", src: strings.NewReader("y"), size: 1, wantErr: ErrExists},
		"name invalid": {name: "images/A", src: strings.NewReader("y"), size: 1, wantErr: ErrInvalidName},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			before := tree(t, root)
			v, err := f.Import(ctx, tt.name, tt.src, tt.size)
			if tt.wantErr != nil || tt.wantText != "" {
				if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) || !contains(err, tt.wantText) {
					t.Fatalf("Import = %v, want %v %q", err, tt.wantErr, tt.wantText)
				}
				if after := tree(t, root); !slices.Equal(before, after) {
					t.Errorf("files changed:\nbefore %q\nafter  %q", before, after)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if v.Size != int64(len(tt.want)) || v.CloneMethod != MethodImport {
				t.Errorf("Import = %+v, want size %d by import", v, len(tt.want))
			}
			if v.Allocated > tt.wantAllocated {
				t.Errorf("allocated %d bytes, want at most %d (holes kept)", v.Allocated, tt.wantAllocated)
			}
			if got, err := f.Checksum(ctx, tt.name); err != nil || got != sum(tt.want) {
				t.Errorf("Checksum = %s, %v; want %s", got, err, sum(tt.want))
			}
		})
	}
	if left := tempEntries(t, root); len(left) != 0 {
		t.Errorf("temp dir = %v, want empty", left)
	}
}

func TestChecksumKnownVector(t *testing.T) {
	ctx := context.Background()
	f, _ := newTestFile(t, FileOptions{})
	if _, err := f.Import(ctx, "abc", strings.NewReader("abc"), 3); err != nil {
		t.Fatal(err)
	}
	got, err := f.Checksum(ctx, "abc")
	if want := "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; err != nil || got != want {
		t.Errorf("Checksum = %s, %v; want %s", got, err, want)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := f.Checksum(cancelled, "abc"); !errors.Is(err, context.Canceled) {
		t.Errorf("Checksum with a cancelled context = %v", err)
	}
}

// TestImportCancelled cancels a real context while the source is being
// read: the import stops at the next chunk and leaves nothing behind.
func TestImportCancelled(t *testing.T) {
	f, root := newTestFile(t, FileOptions{})
	before := tree(t, root)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := &cancellingReader{r: bytes.NewReader(randomBytes(3, 16*mib)), after: 3 * mib, cancel: cancel}
	if _, err := f.Import(ctx, "images/big", src, 16*mib); !errors.Is(err, context.Canceled) {
		t.Fatalf("Import = %v, want context.Canceled", err)
	}
	if src.read >= 16*mib {
		t.Errorf("read all %d bytes despite the cancel", src.read)
	}
	if _, err := f.Stat(context.Background(), "images/big"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat = %v, want ErrNotFound", err)
	}
	if after := tree(t, root); !slices.Equal(before, after) {
		t.Errorf("files changed:\nbefore %q\nafter  %q", before, after)
	}
}
