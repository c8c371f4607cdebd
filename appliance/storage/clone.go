package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Clone copies volume src into the new volume dst: a reflink clone when
// the filesystem supports FICLONE (and ForceCopy is off), else a copy of
// src's data extents only. ErrNotFound for a missing src, ErrExists for a
// taken dst. A cancelled context stops the copy and leaves no dst.
func (f *File) Clone(ctx context.Context, src, dst string) (Volume, error) {
	if err := ValidateName(src); err != nil {
		return Volume{}, fmt.Errorf("clone %s to %s: %w", src, dst, err)
	}
	if err := ValidateName(dst); err != nil {
		return Volume{}, fmt.Errorf("clone %s to %s: %w", src, dst, err)
	}
	in, fi, err := f.openVolume(src)
	if err != nil {
		return Volume{}, fmt.Errorf("clone %s to %s: %w", src, dst, err)
	}
	defer in.Close()
	v, err := f.create(ctx, dst, func(tmp *os.File) (string, error) {
		return f.fill(ctx, tmp, in, fi.Size())
	})
	if err != nil {
		return Volume{}, fmt.Errorf("clone %s to %s: %w", src, dst, err)
	}
	return v, nil
}

// ImportFile creates volume name from the regular file path on the
// server, the way Clone does (reflink or sparse copy).
func (f *File) ImportFile(ctx context.Context, name, path string) (Volume, error) {
	if err := ValidateName(name); err != nil {
		return Volume{}, fmt.Errorf("import %s as %s: %w", path, name, err)
	}
	in, err := os.Open(path)
	if err != nil {
		return Volume{}, fmt.Errorf("import %s as %s: %w", path, name, err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return Volume{}, fmt.Errorf("import %s as %s: %w", path, name, err)
	}
	if !fi.Mode().IsRegular() {
		return Volume{}, fmt.Errorf("import %s as %s: not a regular file", path, name)
	}
	v, err := f.create(ctx, name, func(tmp *os.File) (string, error) {
		return f.fill(ctx, tmp, in, fi.Size())
	})
	if err != nil {
		return Volume{}, fmt.Errorf("import %s as %s: %w", path, name, err)
	}
	return v, nil
}

// fill makes the empty file dst a copy of the first size bytes of src and
// returns the method used.
func (f *File) fill(ctx context.Context, dst, src *os.File, size int64) (string, error) {
	if !f.forceCopy {
		err := unix.IoctlFileClone(int(dst.Fd()), int(src.Fd()))
		if err == nil {
			return MethodReflink, nil
		}
		if !reflinkUnsupported(err) {
			return "", fmt.Errorf("reflink: %w", err)
		}
		f.log.Debug("reflink unavailable, copying data extents", "error", err)
		if err := dst.Truncate(0); err != nil { // drop anything a failed clone left
			return "", fmt.Errorf("truncate: %w", err)
		}
	}
	if err := copySparse(ctx, dst, src, size); err != nil {
		return "", err
	}
	return MethodSparseCopy, nil
}

// reflinkUnsupported reports whether FICLONE failed because this pair of
// files cannot share blocks (no reflink support, different filesystems),
// as opposed to a real I/O error.
func reflinkUnsupported(err error) bool {
	for _, e := range []error{unix.EOPNOTSUPP, unix.ENOTTY, unix.EXDEV, unix.EINVAL, unix.ENOSYS} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// copySparse copies the data extents of src's first size bytes to the
// same offsets of the empty file dst. Holes are found with
// SEEK_DATA/SEEK_HOLE and never read; all-zero blocks inside data extents
// are not written either, so every hole stays a hole.
func copySparse(ctx context.Context, dst, src *os.File, size int64) error {
	// Sized first, so no write extends the file: filesystems that
	// preallocate speculatively past EOF (XFS) then have no reason to.
	if err := dst.Truncate(size); err != nil {
		return fmt.Errorf("set size: %w", err)
	}
	buf := make([]byte, chunkSize)
	w := newSparseWriter(dst)
	fd := int(src.Fd())
	for off := int64(0); off < size; {
		start, end, err := nextData(fd, off, size)
		if err != nil {
			return err
		}
		if start >= end {
			break // only holes left
		}
		for start < end {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := int(min(int64(len(buf)), end-start))
			if _, err := src.ReadAt(buf[:n], start); err != nil {
				if errors.Is(err, io.EOF) {
					return fmt.Errorf("source shrank below %d bytes during the copy", size)
				}
				return fmt.Errorf("read source: %w", err)
			}
			if err := w.writeAt(buf[:n], start); err != nil {
				return err
			}
			start += int64(n)
		}
		off = end
	}
	return nil
}

// nextData returns the next data extent [start, end) of fd at or after
// off, clipped to size; start == end when only holes remain. A filesystem
// without SEEK_DATA counts as all data.
func nextData(fd int, off, size int64) (start, end int64, err error) {
	start, err = unix.Seek(fd, off, unix.SEEK_DATA)
	switch {
	case errors.Is(err, unix.ENXIO):
		return size, size, nil
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.EOPNOTSUPP):
		return off, size, nil
	case err != nil:
		return 0, 0, fmt.Errorf("seek data: %w", err)
	}
	end, err = unix.Seek(fd, start, unix.SEEK_HOLE)
	if err != nil {
		return 0, 0, fmt.Errorf("seek hole: %w", err)
	}
	return min(start, size), min(end, size), nil
}
