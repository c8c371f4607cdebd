// Package boottest proves, in tests, that a node really boots from an iSCSI
// disk: GoldenImage writes a sparse disk image whose boot sector prints a
// marker to COM1, and BootISCSI starts a qemu node that iPXE-boots a given
// script (typically templates.RenderSANBoot's sanboot) so that WaitSerial can
// watch for the marker. Import it from _test.go files only.
package boottest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// RequireRealEnv is the environment variable that, set to 1, turns a missing
// qemu, iPXE ROM, nasm or tgt into a test failure instead of a skip.
const RequireRealEnv = "MALLEABLE_REQUIRE_REAL"

// bootCode is mbr.asm up to its message, assembled by hand (and checked
// against nasm 2.16 by TestBootSectorMatchesNASM). It runs at 0000:7C00.
const bootCode = "" +
	"\xfa" + //         7C00  cli
	"\xfc" + //         7C01  cld
	"\x31\xc0" + //     7C02  xor ax, ax
	"\x8e\xd8" + //     7C04  mov ds, ax
	"\xbe\x23\x7c" + // 7C06  mov si, 0x7c23      ; msg
	"\xac" + //         7C09  lodsb               ; .next
	"\x84\xc0" + //     7C0A  test al, al
	"\x74\x11" + //     7C0C  jz 0x7c1f           ; .halt
	"\x88\xc4" + //     7C0E  mov ah, al
	"\xba\xfd\x03" + // 7C10  mov dx, 0x3fd       ; COM1 line status
	"\xec" + //         7C13  in al, dx           ; .wait
	"\xa8\x20" + //     7C14  test al, 0x20       ; transmitter empty?
	"\x74\xfb" + //     7C16  jz 0x7c13           ; .wait
	"\x88\xe0" + //     7C18  mov al, ah
	"\xb2\xf8" + //     7C1A  mov dl, 0xf8        ; dx = 0x3f8, COM1 data
	"\xee" + //         7C1C  out dx, al
	"\xeb\xea" + //     7C1D  jmp 0x7c09          ; .next
	"\xfa" + //         7C1F  cli                 ; .halt
	"\xf4" + //         7C20  hlt
	"\xeb\xfc" //       7C21  jmp 0x7c1f          ; .halt

// SectorSize is the size of the boot sector, and the unit of image sizes.
const SectorSize = 512

// MaxMarkerLen is the longest marker that fits in the boot sector after the
// code, CR, LF, NUL and the 0x55AA signature.
const MaxMarkerLen = SectorSize - 2 - len(bootCode) - 3

// BootSector returns the 512-byte boot sector that prints marker, CR and LF
// to COM1 (I/O port 0x3f8) and then halts with interrupts off. marker is 1
// to MaxMarkerLen printable ASCII characters; it sits at offset len(bootCode)
// (0x23), NUL-terminated, and the sector ends with the 0x55AA signature.
func BootSector(marker string) ([]byte, error) {
	if marker == "" || len(marker) > MaxMarkerLen {
		return nil, fmt.Errorf("boot marker must be 1 to %d bytes, got %d", MaxMarkerLen, len(marker))
	}
	for i := 0; i < len(marker); i++ {
		if c := marker[i]; c < 0x20 || c > 0x7e {
			return nil, fmt.Errorf("boot marker byte %d (%#x) is not printable ASCII", i, c)
		}
	}
	sector := make([]byte, SectorSize)
	n := copy(sector, bootCode)
	n += copy(sector[n:], marker)
	copy(sector[n:], "\r\n\x00")
	sector[510], sector[511] = 0x55, 0xaa
	return sector, nil
}

// GoldenImage writes a sparse raw disk image of size bytes into dir (a new
// temporary directory of tb when dir is empty) and returns its path. Its
// first sector is BootSector(marker); the rest is a hole, so a 2 GiB image
// costs one block. size must be a positive multiple of 512. Any error fails
// tb.
func GoldenImage(tb testing.TB, dir string, size int64, marker string) (path string) {
	tb.Helper()
	sector, err := BootSector(marker)
	if err != nil {
		tb.Fatalf("boottest: %v", err)
	}
	if size < SectorSize || size%SectorSize != 0 {
		tb.Fatalf("boottest: image size %d is not a positive multiple of %d", size, SectorSize)
	}
	if dir == "" {
		dir = tb.TempDir()
	}
	f, err := os.CreateTemp(dir, "golden-*.img")
	if err != nil {
		tb.Fatalf("boottest: create golden image: %v", err)
	}
	defer f.Close()
	if _, err := f.Write(sector); err != nil {
		tb.Fatalf("boottest: write boot sector: %v", err)
	}
	if err := f.Truncate(size); err != nil {
		tb.Fatalf("boottest: size golden image: %v", err)
	}
	if err := f.Close(); err != nil {
		tb.Fatalf("boottest: close golden image: %v", err)
	}
	return f.Name()
}

// lookTool returns the path of an installed program, or skips tb (fails it
// under MALLEABLE_REQUIRE_REAL=1) naming the Debian package to install.
// /usr/sbin (tgtd, tgtadm) is searched even when it is not on PATH.
func lookTool(tb testing.TB, name, debianPackage string) string {
	tb.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		path, err = exec.LookPath(filepath.Join("/usr/sbin", name))
	}
	if err != nil {
		missing(tb, fmt.Sprintf("%s not installed (Debian: apt-get install %s)", name, debianPackage))
	}
	return path
}

// lookIPXE checks that qemu finds an iPXE ROM for virtio-net-pci in one of
// its firmware directories (`qemu -L help`), and skips or fails tb if not.
func lookIPXE(tb testing.TB, qemu string) {
	tb.Helper()
	out, err := exec.Command(qemu, "-L", "help").Output()
	if err != nil {
		missing(tb, fmt.Sprintf("%s -L help: %v", qemu, err))
	}
	for _, dir := range bytes.Fields(out) {
		if _, err := os.Stat(filepath.Join(string(dir), virtioROM)); err == nil {
			return
		}
	}
	missing(tb, fmt.Sprintf("no %s in qemu's firmware path %q (Debian: apt-get install ipxe-qemu)", virtioROM, bytes.Fields(out)))
}

// missing skips tb because of a missing tool, or fails it under
// MALLEABLE_REQUIRE_REAL=1.
func missing(tb testing.TB, msg string) {
	tb.Helper()
	if os.Getenv(RequireRealEnv) == "1" {
		tb.Fatalf("boottest: %s, and %s=1 requires it", msg, RequireRealEnv)
	}
	tb.Skipf("boottest: %s; set %s=1 to fail instead of skipping", msg, RequireRealEnv)
}
