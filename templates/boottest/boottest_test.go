package boottest

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/templates"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

//go:embed mbr.asm
var mbrSource string

func TestBootSector(t *testing.T) {
	tests := map[string]struct {
		marker string
		want   string // error substring, "" for success
	}{
		"simple":      {"MALLEABLE-BOOT-OK", ""},
		"one byte":    {"x", ""},
		"longest":     {strings.Repeat("m", MaxMarkerLen), ""},
		"punctuation": {"boot ok: node-7 (tenant acme) ~!", ""},
		"empty":       {"", "must be 1 to 472 bytes, got 0"},
		"too long":    {strings.Repeat("m", MaxMarkerLen+1), "got 473"},
		"newline":     {"ok\n", "byte 2 (0xa) is not printable"},
		"NUL":         {"o\x00k", "byte 1 (0x0)"},
		"non-ASCII":   {"booté", "byte 4 (0xc3)"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			sector, err := BootSector(tc.marker)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("BootSector(%q) error = %v, want %q", tc.marker, err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(sector) != SectorSize || sector[510] != 0x55 || sector[511] != 0xaa {
				t.Fatalf("no 0x55AA signature at 510 in %d bytes", len(sector))
			}
			msg := sector[len(bootCode):]
			if !bytes.HasPrefix(msg, []byte(tc.marker+"\r\n\x00")) {
				t.Fatalf("marker not at offset %#x: %q", len(bootCode), msg[:len(tc.marker)+3])
			}
		})
	}
	// mov si, msg must point at the marker: 0x7c00 + len(bootCode).
	if si := int(bootCode[7]) | int(bootCode[8])<<8; si != 0x7c00+len(bootCode) {
		t.Errorf("mov si, %#x does not address the marker at %#x", si, 0x7c00+len(bootCode))
	}
}

func TestBootSectorGolden(t *testing.T) {
	sector, err := BootSector("MALLEABLE-BOOT-OK")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "bootsector.golden")
	got := []byte(hex.Dump(sector))
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("boot sector differs from %s (run with -update if intended)\n--- got\n%s", path, got)
	}
}

// TestBootSectorMatchesNASM assembles mbr.asm with nasm and checks that the
// hand-assembled sector is byte for byte what nasm produces.
func TestBootSectorMatchesNASM(t *testing.T) {
	nasm := lookTool(t, "nasm", "nasm")
	dir := t.TempDir()
	src := filepath.Join(dir, "mbr.asm")
	if err := os.WriteFile(src, []byte(mbrSource), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, marker := range []string{"MALLEABLE-BOOT-OK", "x", strings.Repeat("~", MaxMarkerLen)} {
		bytesList := make([]string, len(marker))
		for i := range len(marker) {
			bytesList[i] = fmt.Sprintf("%#x", marker[i])
		}
		out := filepath.Join(dir, "mbr.bin")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		msg, err := exec.CommandContext(ctx, nasm, "-f", "bin", "-dMARKER="+strings.Join(bytesList, ","), "-o", out, src).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("nasm: %v: %s", err, msg)
		}
		want, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		got, err := BootSector(marker)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("marker %.20q: hand-assembled sector differs from nasm's\n--- ours\n%s--- nasm\n%s", marker, hex.Dump(got), hex.Dump(want))
		}
	}
}

func TestGoldenImage(t *testing.T) {
	dir := t.TempDir()
	const size = 2 << 30
	path := GoldenImage(t, dir, size, "golden-marker")
	if filepath.Dir(path) != dir {
		t.Errorf("image %s is not in %s", path, dir)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != size {
		t.Errorf("size %d, want %d", fi.Size(), size)
	}
	if used := fi.Sys().(*syscall.Stat_t).Blocks * 512; used > 1<<20 {
		t.Errorf("a 2 GiB image uses %d bytes on disk; it should be sparse", used)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, SectorSize)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	want, _ := BootSector("golden-marker")
	if !bytes.Equal(b, want) {
		t.Errorf("first sector is not BootSector(marker)")
	}
	if other := GoldenImage(t, dir, SectorSize, "x"); other == path {
		t.Errorf("two images share the path %s", path)
	}
}

// sanboot renders the script a node uses to boot tgt's target t.
func sanboot(t *testing.T, g *tgtd, tg target, mutate func(*templates.SANBoot)) string {
	t.Helper()
	s := templates.SANBoot{
		InitiatorIQN: tg.Initiator,
		CHAPUser:     tg.CHAPUser,
		CHAPSecret:   tg.CHAPSecret,
		Portal:       "10.0.2.2", // the host's 127.0.0.1, seen from qemu's user network
		Port:         g.Port,
		LUN:          tg.LUN,
		TargetIQN:    tg.IQN,
		RetryDelay:   1,
	}
	if mutate != nil {
		mutate(&s)
	}
	var buf bytes.Buffer
	if err := templates.RenderSANBoot(&buf, s); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// TestBootISCSI boots qemu nodes through a real tgtd with CHAP and an
// initiator ACL, from scripts rendered by templates.RenderSANBoot. LUN 10
// only boots if the script writes it in hex ("a"): read as decimal it would
// be LUN 16, which does not exist.
func TestBootISCSI(t *testing.T) {
	qemu := lookTool(t, "qemu-system-x86_64", "qemu-system-x86")
	lookIPXE(t, qemu)
	g := startTGTD(t)
	dir := t.TempDir()
	tests := map[string]target{
		"LUN 1":          {TID: 1, LUN: 1},
		"LUN 10 in hex":  {TID: 2, LUN: 10},
		"LUN 255 in hex": {TID: 3, LUN: 255},
	}
	markers := map[string]string{}
	for name, tg := range tests {
		tg.IQN = fmt.Sprintf("iqn.2026-11.cloud.malleable:boottest.disk-%d", tg.TID)
		tg.Initiator = fmt.Sprintf("iqn.2026-11.cloud.malleable:node-%d", tg.TID)
		tg.CHAPUser, tg.CHAPSecret = fmt.Sprintf("tenant-%d", tg.TID), fmt.Sprintf("secret-%d-Zt8Kq2xVb9", tg.TID)
		markers[name] = fmt.Sprintf("MALLEABLE-BOOT-OK tid=%d lun=%d", tg.TID, tg.LUN)
		tg.Backing = GoldenImage(t, dir, 64<<20, markers[name])
		g.newTarget(tg)
		tests[name] = tg
	}
	for name, tg := range tests {
		t.Run(name, func(t *testing.T) {
			script := sanboot(t, g, tg, nil)
			start := time.Now()
			n := BootISCSI(t, NodeOptions{Script: script})
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := n.WaitSerial(ctx, markers[name]); err != nil {
				t.Fatal(err)
			}
			t.Logf("marker on serial %.1f s after qemu started (TCG), LUN %d rendered as %q",
				time.Since(start).Seconds(), tg.LUN, fmt.Sprintf("%x", tg.LUN))
			// The console mirror shows iPXE hooked the disk as drive 0x80.
			if !strings.Contains(n.Serial(), "Registered SAN device 0x80") {
				t.Errorf("serial does not show iPXE registering the SAN disk:\n%s", tail(n.Serial()))
			}
			n.Stop()
			if exited, _ := n.Exited(); !exited {
				t.Errorf("qemu still running after Stop")
			}
		})
	}
}

// TestBootISCSIRefused boots with credentials the target refuses: the node
// keeps failing and retrying, never shows the marker, and tgtd says why.
// The wait is bounded by events (two failed sanboots on the console), not by
// a sleep.
func TestBootISCSIRefused(t *testing.T) {
	qemu := lookTool(t, "qemu-system-x86_64", "qemu-system-x86")
	lookIPXE(t, qemu)
	g := startTGTD(t)
	const marker = "MALLEABLE-BOOT-OK refused"
	tg := target{
		TID: 1, LUN: 1,
		IQN:        "iqn.2026-11.cloud.malleable:boottest.refused",
		Backing:    GoldenImage(t, "", 64<<20, marker),
		CHAPUser:   "tenant-r",
		CHAPSecret: "right-secret-Zt8Kq2xVb9",
		Initiator:  "iqn.2026-11.cloud.malleable:node-r",
	}
	g.newTarget(tg)
	tests := map[string]struct {
		mutate  func(*templates.SANBoot)
		ipxe    string // iPXE's reason, on the console
		tgtdLog string // what tgtd logs for each refused login, if anything
	}{
		"wrong CHAP secret": {
			mutate:  func(s *templates.SANBoot) { s.CHAPSecret = "wrong-secret-Zt8Kq2xVb9" },
			ipxe:    "Operation not permitted",
			tgtdLog: "CHAP initiator auth.: authentication of " + tg.Initiator + " failed",
		},
		"unknown CHAP user": {
			mutate:  func(s *templates.SANBoot) { s.CHAPUser = "tenant-x" },
			ipxe:    "Operation not permitted",
			tgtdLog: "No valid user/pass combination for initiator " + tg.Initiator,
		},
		// tgtd logs nothing when its ACL turns an initiator away.
		"initiator not in the ACL": {
			mutate: func(s *templates.SANBoot) { s.InitiatorIQN = "iqn.2026-11.cloud.malleable:node-x" },
			ipxe:   "No such device",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			logBefore := strings.Count(g.log(), tc.tgtdLog)
			n := BootISCSI(t, NodeOptions{Script: sanboot(t, g, tg, tc.mutate)})
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			const failure = "Could not open SAN device"
			err := poll(ctx, func() bool { return strings.Count(n.Serial(), failure) >= 2 },
				func() string { return "serial.log:\n" + tail(n.Serial()) })
			if err != nil {
				t.Fatalf("waiting for two failed sanboots: %v", err)
			}
			serial := n.Serial()
			if strings.Contains(serial, marker) {
				t.Fatalf("the node booted the disk with refused credentials:\n%s", tail(serial))
			}
			if !strings.Contains(serial, failure+": "+tc.ipxe) {
				t.Errorf("the console does not show %q:\n%s", failure+": "+tc.ipxe, tail(serial))
			}
			if !strings.Contains(serial, "iSCSI boot failed, retrying in 1 second") {
				t.Errorf("the script's retry message is not on the console:\n%s", tail(serial))
			}
			if tc.tgtdLog != "" {
				if err := g.waitLog(ctx, tc.tgtdLog, logBefore+2); err != nil {
					t.Errorf("tgtd did not log %q twice: %v", tc.tgtdLog, err)
				}
			}
			// WaitSerial's error carries the console, which says why.
			done, cancelDone := context.WithCancel(context.Background())
			cancelDone()
			if err := n.WaitSerial(done, marker); err == nil || !strings.Contains(err.Error(), failure) {
				t.Errorf("WaitSerial error does not show the console: %v", err)
			}
		})
	}
}
