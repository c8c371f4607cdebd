package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
)

const (
	// chunkSize is how much is read, checked and written at a time; the
	// context is checked once per chunk.
	chunkSize = 1 << 20
	// blockSize is the unit of hole detection: a block of zeros is not
	// written. 4 KiB is the block size of ext4, XFS and btrfs.
	blockSize = 4096
)

// Import streams size bytes of src into the new volume name (size < 0:
// everything up to EOF). All-zero 4 KiB blocks become holes. A source that
// ends early or runs past size is an error and leaves no volume. Import
// checks ctx between chunks; a Read that blocks is src's to unblock (an
// HTTP request body does when its request's context ends).
func (f *File) Import(ctx context.Context, name string, src io.Reader, size int64) (Volume, error) {
	v, err := f.create(ctx, name, func(tmp *os.File) (string, error) {
		return MethodImport, importStream(ctx, tmp, src, size)
	})
	if err != nil {
		return Volume{}, fmt.Errorf("import %s: %w", name, err)
	}
	return v, nil
}

func importStream(ctx context.Context, dst *os.File, src io.Reader, size int64) error {
	if size > 0 {
		// Sized first, as in copySparse; a short source is an error and
		// the file is discarded.
		if err := dst.Truncate(size); err != nil {
			return fmt.Errorf("set size: %w", err)
		}
	}
	buf := make([]byte, chunkSize)
	w := newSparseWriter(dst)
	var off int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		want := int64(len(buf))
		if size >= 0 {
			if off == size {
				if n, _ := io.ReadFull(src, buf[:1]); n > 0 {
					return fmt.Errorf("source is longer than %d bytes", size)
				}
				break
			}
			want = min(want, size-off)
		}
		n, err := io.ReadFull(src, buf[:want])
		if werr := w.writeAt(buf[:n], off); werr != nil {
			return werr
		}
		off += int64(n)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			if size >= 0 && off < size {
				return fmt.Errorf("source ended after %d of %d bytes: %w", off, size, io.ErrUnexpectedEOF)
			}
			break
		}
		if err != nil {
			return fmt.Errorf("read source: %w", err)
		}
	}
	if err := dst.Truncate(off); err != nil {
		return fmt.Errorf("set size: %w", err)
	}
	return nil
}

// sparseWriter writes into a new, empty file and skips the all-zero
// blocks, which the file already reads as zeros and keeps as holes.
type sparseWriter struct {
	f    *os.File
	zero []byte
}

func newSparseWriter(f *os.File) *sparseWriter {
	return &sparseWriter{f: f, zero: make([]byte, blockSize)}
}

// writeAt writes p at offset off, skipping the blocks of p that are all
// zeros and coalescing the others into as few writes as possible.
func (w *sparseWriter) writeAt(p []byte, off int64) error {
	for i := 0; i < len(p); {
		for i < len(p) && w.isZero(p[i:min(i+blockSize, len(p))]) {
			i += blockSize
		}
		j := i
		for j < len(p) && !w.isZero(p[j:min(j+blockSize, len(p))]) {
			j += blockSize
		}
		j = min(j, len(p))
		if i < j {
			if _, err := w.f.WriteAt(p[i:j], off+int64(i)); err != nil {
				return fmt.Errorf("write: %w", err)
			}
		}
		i = j
	}
	return nil
}

func (w *sparseWriter) isZero(b []byte) bool { return bytes.Equal(b, w.zero[:len(b)]) }

// Checksum returns the lowercase hex SHA-256 of volume name's content,
// holes read as zeros. It reads the whole volume, checking ctx between
// chunks.
func (f *File) Checksum(ctx context.Context, name string) (string, error) {
	file, _, err := f.openVolume(name)
	if err != nil {
		return "", fmt.Errorf("checksum %s: %w", name, err)
	}
	defer file.Close()
	h := sha256.New()
	buf := make([]byte, chunkSize)
	for {
		if err := ctx.Err(); err != nil {
			return "", fmt.Errorf("checksum %s: %w", name, err)
		}
		n, err := file.Read(buf)
		h.Write(buf[:n])
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("checksum %s: %w", name, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
