package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/iscsi"
	"github.com/malleable-cloud/malleable/appliance/iscsi/iscsitest"
	"github.com/malleable-cloud/malleable/appliance/m2"
	"github.com/malleable-cloud/malleable/appliance/m2/server"
	"github.com/malleable-cloud/malleable/appliance/secrets"
	"github.com/malleable-cloud/malleable/appliance/storage"
	"github.com/malleable-cloud/malleable/templates/boottest"
)

// iqnPrefix names the test's targets and initiators.
const iqnPrefix = "iqn.2026-11.org.example.m2test"

// imageSize is the size of the test's golden images: 64 MiB, sparse.
const imageSize = 64 << 20

// callerHeader carries the simulated caller: "admin" or "project:<name>".
// The appliance's real Authorize checks tokens; these tests only need to
// choose who asks.
const callerHeader = "X-Test-Caller"

func authorize(r *http.Request) (server.Caller, bool) {
	v := r.Header.Get(callerHeader)
	if v == "admin" {
		return server.Caller{Admin: true}, true
	}
	if p, ok := strings.CutPrefix(v, "project:"); ok && p != "" {
		return server.Caller{Project: p}, true
	}
	return server.Caller{}, false
}

// env is one M2 backend on a real tgtd, File storage and an in-memory
// secret store, served through the real router by an httptest server.
type env struct {
	t       testing.TB
	dir     string
	tgtd    *iscsi.Tgtd
	secrets *secrets.Memory
	// portalHost is the portal's host as nodes see it (10.0.2.2 for a
	// qemu guest), which goes into boot scripts.
	portalHost string

	vols    *storage.File
	backend *server.Backend
	srv     *httptest.Server
}

// newEnv starts tgtd and the backend. portalHost is the host nodes reach
// the portal by; empty means tgtd's own address.
func newEnv(tb testing.TB, portalHost string) *env {
	tb.Helper()
	iscsitest.Require(tb, "tgtd", "tgtadm", "iscsi-ls", "iscsi-inq", "iscsi-readcapacity16", "qemu-img")
	e := &env{t: tb, dir: tb.TempDir(), secrets: secrets.NewMemory(), portalHost: portalHost}
	e.tgtd = iscsitest.Start(tb, iscsitest.Options{})
	if e.portalHost == "" {
		e.portalHost = e.tgtd.Portal().Addr().String()
	}
	e.open()
	tb.Cleanup(e.close)
	return e
}

// open opens storage and the backend on the env's directory and secrets,
// against the current tgtd, and serves the API.
func (e *env) open() {
	e.t.Helper()
	log := logger(e.t)
	vols, err := storage.NewFile(filepath.Join(e.dir, "volumes"), storage.FileOptions{Logger: log})
	if err != nil {
		e.t.Fatalf("storage: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	portal := netip.AddrPortFrom(netip.MustParseAddr(e.portalHost), e.tgtd.Portal().Port())
	drv := iscsi.New(iscsi.Options{ControlPort: e.tgtd.ControlPort(), Logger: log})
	b, err := server.Open(ctx, server.Config{
		DB: filepath.Join(e.dir, "m2.db"), IQNPrefix: iqnPrefix, Portal: portal.String(),
		Storage: vols, Targets: drv, Secrets: e.secrets, Logger: log,
	})
	if err != nil {
		vols.Close()
		e.t.Fatalf("server.Open: %v", err)
	}
	e.vols, e.backend = vols, b
	e.srv = httptest.NewServer(server.Handler(server.HandlerConfig{Backend: b, Authorize: authorize, Logger: log}))
}

// logger logs to the test's output, which go test shows for failed tests
// (or with -v), and nowhere for benchmarks, whose output it always shows.
func logger(tb testing.TB) *slog.Logger {
	if _, ok := tb.(*testing.B); ok {
		return slog.New(slog.DiscardHandler)
	}
	return iscsitest.Logger(tb)
}

// close stops serving and closes the backend and storage; tgtd stays. It
// may be called more than once.
func (e *env) close() {
	if e.srv == nil {
		return
	}
	e.srv.Close()
	if err := e.backend.Close(); err != nil {
		e.t.Errorf("close backend: %v", err)
	}
	if err := e.vols.Close(); err != nil {
		e.t.Errorf("close storage: %v", err)
	}
	e.srv, e.backend, e.vols = nil, nil, nil
}

// do sends one API request as caller ("" for none) and returns the status
// and body. body is JSON-encoded unless it is a []byte or an io.Reader.
func (e *env) do(method, path, caller string, body any) (int, []byte) {
	e.t.Helper()
	status, out, err := e.send(method, path, caller, body)
	if err != nil {
		e.t.Fatal(err)
	}
	return status, out
}

// send is do for goroutines other than the test's: it returns errors.
func (e *env) send(method, path, caller string, body any) (int, []byte, error) {
	status, out, _, err := e.roundTrip(method, path, caller, body)
	return status, out, err
}

// roundTrip sends one request and returns the status, body and headers.
// Redirects are not followed, so a test sees what the router answered.
// typedBody is a request body sent with its Content-Type.
type typedBody struct {
	contentType string
	body        []byte
}

func (e *env) roundTrip(method, path, caller string, body any) (int, []byte, http.Header, error) {
	var r io.Reader
	var ct string
	switch b := body.(type) {
	case nil:
	case typedBody:
		r, ct = bytes.NewReader(b.body), b.contentType
	case []byte:
		r = bytes.NewReader(b)
	case io.Reader:
		r = b
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return 0, nil, nil, err
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, r)
	if err != nil {
		return 0, nil, nil, err
	}
	if caller != "" {
		req.Header.Set(callerHeader, caller)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	client := *e.srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	return resp.StatusCode, out, resp.Header, nil
}

// with returns a copy of e that reports to tb, for subtests; it shares
// e's backend, tgtd and server.
func (e *env) with(tb testing.TB) *env {
	c := *e
	c.t = tb
	return &c
}

// must sends a request that has to answer want, and decodes the answer
// into out unless out is nil.
func (e *env) must(want int, method, path, caller string, body, out any) {
	e.t.Helper()
	status, resp := e.do(method, path, caller, body)
	if status != want {
		e.t.Fatalf("%s %s as %q: status %d, want %d: %s", method, path, caller, status, want, resp)
	}
	if out != nil {
		if err := json.Unmarshal(resp, out); err != nil {
			e.t.Fatalf("%s %s: decode %s: %v", method, path, resp, err)
		}
	}
}

// importImage makes a golden image file (see goldenImage) and imports it
// through the API as name; it returns the image and the file's SHA-256.
func (e *env) importImage(name string, size int64, marker string) (m2.Image, string) {
	e.t.Helper()
	path, sum := goldenImage(e.t, size, marker, 0.001)
	var img m2.Image
	e.must(http.StatusCreated, http.MethodPost, "/m2/v1/images", "admin", map[string]string{"name": name, "path": path}, &img)
	if img.SHA256 != sum || img.Size != size {
		e.t.Fatalf("image %s is %d bytes, sha256 %s; the file is %d bytes, sha256 %s", name, img.Size, img.SHA256, size, sum)
	}
	return img, sum
}

// createDisk creates disk name of project from an image through the API.
func (e *env) createDisk(project, name, image string) m2.Disk {
	e.t.Helper()
	var d m2.Disk
	e.must(http.StatusCreated, http.MethodPost, "/m2/v1/projects/"+project+"/disks", "project:"+project,
		map[string]string{"name": name, "image": image}, &d)
	return d
}

// attach attaches a disk to node through the API and returns the
// attachment and the boot script fetched with its token, parsed.
func (e *env) attach(project, disk, node string) (m2.Attachment, bootScript) {
	e.t.Helper()
	var a m2.Attachment
	e.must(http.StatusOK, http.MethodPost, "/m2/v1/projects/"+project+"/disks/"+disk+"/attach", "project:"+project,
		map[string]string{"node": node}, &a)
	status, script := e.do(http.MethodGet, "/m2/v1/boot/"+a.BootToken, "", nil)
	if status != http.StatusOK {
		e.t.Fatalf("boot script of %s/%s: status %d: %s", project, disk, status, script)
	}
	return a, parseBootScript(e.t, string(script))
}

// login is how a host-side initiator reaches target iqn with the
// credentials of a boot script.
func (e *env) login(iqn string, s bootScript) iscsitest.Login {
	return iscsitest.Login{Portal: e.tgtd.Portal(), Target: iqn, Initiator: s.initiator, User: s.user, Secret: s.secret}
}

// storedSecret returns the CHAP secret the secret store holds for a
// disk's account ("m2-d<id>" at "m2/chap/d<id>"), for tests that need the
// right secret while no boot script shows it.
func (e *env) storedSecret(chapUser string) string {
	e.t.Helper()
	id, ok := strings.CutPrefix(chapUser, "m2-")
	if !ok {
		e.t.Fatalf("CHAP user %q is not m2-<disk id>", chapUser)
	}
	v, err := e.secrets.Get(context.Background(), "m2/chap/"+id)
	if err != nil {
		e.t.Fatalf("secret of %s: %v", chapUser, err)
	}
	return string(v)
}

// inventory is what the backend has made outside its database: volumes
// in storage and targets in tgtd.
type inventory struct {
	volumes []string
	targets []string
}

func (e *env) inventory() inventory {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var inv inventory
	vs, err := e.vols.List(ctx)
	if err != nil {
		e.t.Fatalf("list volumes: %v", err)
	}
	for _, v := range vs {
		inv.volumes = append(inv.volumes, v.Name)
	}
	ts, err := e.tgtd.Driver().List(ctx)
	if err != nil {
		e.t.Fatalf("list targets: %v", err)
	}
	for _, t := range ts {
		inv.targets = append(inv.targets, t.IQN)
	}
	slices.Sort(inv.targets)
	return inv
}

// diskNames lists project's disks through the API, as admin.
func (e *env) diskNames(project string) []string {
	e.t.Helper()
	var ds []m2.Disk
	e.must(http.StatusOK, http.MethodGet, "/m2/v1/projects/"+project+"/disks", "admin", nil, &ds)
	names := []string{}
	for _, d := range ds {
		names = append(names, d.Name)
	}
	return names
}

// bootScript is what a test needs from an iPXE sanboot script.
type bootScript struct {
	initiator, user, secret string
	uri                     string // iscsi:<host>::<port>:<lun hex>:<iqn>
}

func parseBootScript(tb testing.TB, s string) bootScript {
	tb.Helper()
	var b bootScript
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 3 && f[0] == "set" && f[1] == "initiator-iqn":
			b.initiator = f[2]
		case len(f) == 3 && f[0] == "set" && f[1] == "username":
			b.user = f[2]
		case len(f) == 3 && f[0] == "set" && f[1] == "password":
			b.secret = f[2]
		case len(f) >= 3 && f[0] == "sanboot" && f[1] == "--keep":
			b.uri = f[2]
		}
	}
	if b.initiator == "" || b.user == "" || b.secret == "" || b.uri == "" {
		tb.Fatalf("boot script lacks initiator, CHAP or sanboot:\n%s", s)
	}
	return b
}

// goldenImage writes a sparse image of size bytes into a temporary
// directory: boottest's boot sector printing marker, then pseudo-random
// data over about dataFraction of it in 1 MiB extents (at least three:
// near the start, the middle and the end), holes elsewhere. It returns
// the path and the SHA-256 of the content.
func goldenImage(tb testing.TB, size int64, marker string, dataFraction float64) (string, string) {
	tb.Helper()
	path := boottest.GoldenImage(tb, "", size, marker)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	const extent = 1 << 20
	n := max(3, int64(float64(size)*dataFraction)/extent)
	stride := (size - extent) / n
	rng := rand.NewChaCha8(sha256.Sum256([]byte(marker)))
	buf := make([]byte, extent)
	for i := range n {
		off := (1 + i*stride) / 4096 * 4096
		if i == n-1 {
			off = size - extent
		}
		off = max(off, 4096) // keep the boot sector
		rng.Read(buf)
		if _, err := f.WriteAt(buf, off); err != nil {
			tb.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	return path, fileSum(tb, path)
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func fileSum(tb testing.TB, path string) string {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// readLUN reads the whole LUN through qemu's iSCSI initiator and returns
// its SHA-256.
func readLUN(tb testing.TB, l iscsitest.Login) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dst := filepath.Join(tb.TempDir(), "lun.raw")
	if err := iscsitest.ReadLUN(ctx, l, dst); err != nil {
		tb.Fatalf("read LUN: %v", err)
	}
	defer os.Remove(dst)
	return fileSum(tb, dst)
}
