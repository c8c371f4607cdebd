package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// binary is the malleable executable built once for the end-to-end tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "malleable-e2e")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "malleable")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is a running `malleable serve`.
type daemon struct {
	cmd     *exec.Cmd
	addr    string
	dataDir string
	log     *bytes.Buffer
	done    chan error
}

// startDaemon runs serve on a free loopback port with its state in dataDir
// and waits until it announces its address.
func startDaemon(t *testing.T, dataDir string, extra ...string) *daemon {
	t.Helper()
	return startDaemonEnv(t, binary, dataDir, nil, extra...)
}

// startDaemonEnv is startDaemon with another executable (bin) and extra
// environment variables.
func startDaemonEnv(t *testing.T, bin, dataDir string, env []string, extra ...string) *daemon {
	t.Helper()
	if !slices.Contains(extra, "--config") {
		// No M2 unless a test asks for it: its tgtd would take the
		// machine's default iSCSI portal and control socket.
		cfg := filepath.Join(t.TempDir(), "appliance.ini")
		os.WriteFile(cfg, []byte("[m2]\nenabled = false\n"), 0o600)
		extra = append(extra, "--config", cfg)
	}
	args := append([]string{"serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--log-level", "debug"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{cmd: cmd, dataDir: dataDir, log: &bytes.Buffer{}, done: make(chan error, 1)}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			d.log.WriteString(line + "\n")
			if rest, ok := strings.CutPrefix(line, "malleable: admin API on http://"); ok {
				addr, _, _ := strings.Cut(rest, ",")
				addrc <- addr
			}
		}
		d.done <- cmd.Wait()
	}()
	select {
	case d.addr = <-addrc:
	case err := <-d.done:
		t.Fatalf("serve exited before listening: %v\n%s", err, d.log)
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("serve did not announce its address:\n%s", d.log)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-d.done
		}
	})
	return d
}

// stop sends SIGTERM and requires a clean exit.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("serve exited with %v after SIGTERM:\n%s", err, d.log)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("serve did not stop after SIGTERM:\n%s", d.log)
	}
}

// cli runs one CLI command against d and returns its stdout, stderr and
// exit code.
func (d *daemon) cli(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = []string{"MALLEABLE_SERVER=" + d.addr, "HOME=" + t.TempDir()}
	cmd.Args = append(cmd.Args, "--token-file", filepath.Join(d.dataDir, "admin.token"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// ok runs a CLI command that must succeed and returns its stdout.
func (d *daemon) ok(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := d.cli(t, args...)
	if code != 0 {
		t.Fatalf("malleable %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func TestCLIEndToEnd(t *testing.T) {
	data := filepath.Join(t.TempDir(), "state")
	d := startDaemon(t, data)

	for path, want := range map[string]os.FileMode{data: 0o700, filepath.Join(data, "admin.token"): 0o600,
		filepath.Join(data, "malleable.db"): 0o600, filepath.Join(data, "secrets.enc"): 0o600, filepath.Join(data, "secrets.enc.key"): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %04o, want %04o", path, fi.Mode().Perm(), want)
		}
	}

	d.ok(t, "node", "add", "node-1", "--mac", "52:54:00:AA:00:01", "--bmc", "127.0.0.1:9623", "--bmc-user", "admin")
	d.ok(t, "node", "add", "node-2", "--mac", "52-54-00-aa-00-02")
	d.ok(t, "tenant", "add", "acme")
	d.ok(t, "tenant", "add", "globex")
	if out := d.ok(t, "node", "list"); !strings.Contains(out, "52:54:00:aa:00:01") || !strings.Contains(out, "127.0.0.1:9623") {
		t.Errorf("node list lacks the normalised MAC or BMC:\n%s", out)
	}

	d.ok(t, "lease", "add", "--node", "node-1", "--tenant", "acme", "--start", "now", "--duration", "2h")
	_, errOut, code := d.cli(t, "lease", "add", "--node", "node-1", "--tenant", "globex", "--start", "+1h", "--duration", "2h")
	if code != 1 || !strings.Contains(errOut, "already leased to acme") || !strings.Contains(errOut, "HTTP 409") {
		t.Errorf("overlapping lease: exit %d, stderr %q; want exit 1 naming acme's lease and 409", code, errOut)
	}
	d.ok(t, "lease", "add", "--node", "node-1", "--tenant", "globex", "--start", "+2h", "--duration", "2h")

	var leases []struct {
		ID     int64  `json:"id"`
		Node   string `json:"node"`
		Tenant string `json:"tenant"`
		State  string `json:"state"`
	}
	if err := json.Unmarshal([]byte(d.ok(t, "lease", "list", "--node", "node-1", "-o", "json")), &leases); err != nil {
		t.Fatal(err)
	}
	if len(leases) != 2 || leases[0].Tenant != "acme" || leases[0].State != "active" || leases[1].State != "scheduled" {
		t.Fatalf("leases = %+v", leases)
	}

	_, errOut, code = d.cli(t, "node", "add", "Bad_Name")
	if code != 1 || !strings.Contains(errOut, "DNS label") {
		t.Errorf("bad node name: exit %d, stderr %q", code, errOut)
	}
	_, errOut, code = d.cli(t, "lease", "add", "--node", "node-1")
	if code != 2 || !strings.Contains(errOut, "--tenant") {
		t.Errorf("missing flag: exit %d, stderr %q; want usage error 2", code, errOut)
	}
	if out := d.ok(t, "lease", "cancel", "2"); !strings.Contains(out, "cancelled") {
		t.Errorf("cancel: %s", out)
	}
	if out := d.ok(t, "audit", "list"); !strings.Contains(out, "lease.cancel") || !strings.Contains(out, "refused (409)") {
		t.Errorf("audit list lacks the cancel or the refused lease:\n%s", out)
	}

	// A restart keeps everything.
	d.stop(t)
	if !strings.Contains(d.log.String(), "stopped") {
		t.Errorf("no graceful stop in the log:\n%s", d.log)
	}
	d = startDaemon(t, data)
	out := d.ok(t, "lease", "list")
	if !strings.Contains(out, "acme") || !strings.Contains(out, "cancelled") {
		t.Errorf("after restart, lease list:\n%s", out)
	}
	if out := d.ok(t, "tenant", "list"); !strings.Contains(out, "globex") {
		t.Errorf("after restart, tenant list:\n%s", out)
	}
	d.stop(t)
}

func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.ini")
	os.WriteFile(bad, []byte("[appliance]\nlisten = 127.0.0.1:99999\nlisten_addr = x\n[leases]\nmax_duration = forever\n"), 0o600)
	good := filepath.Join(dir, "good.ini")
	os.WriteFile(good, []byte("[appliance]\ndata_dir = "+dir+"\n"), 0o600)

	run := func(args ...string) (string, int) {
		cmd := exec.Command(binary, args...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	out, code := run("config", "check", bad)
	if code != 2 {
		t.Errorf("config check bad.ini: exit %d, want 2", code)
	}
	for _, want := range []string{"appliance.listen", "appliance.listen_addr: unknown key", "leases.max_duration"} {
		if !strings.Contains(out, want) {
			t.Errorf("config check output lacks %q:\n%s", want, out)
		}
	}
	if out, code := run("config", "check", good); code != 0 || !strings.Contains(out, "OK") {
		t.Errorf("config check good.ini: exit %d\n%s", code, out)
	}
	example, code := run("config", "example")
	if code != 0 {
		t.Fatalf("config example: exit %d", code)
	}
	ex := filepath.Join(dir, "example.ini")
	os.WriteFile(ex, []byte(example), 0o600)
	if out, code := run("config", "check", ex); code != 0 {
		t.Errorf("the shipped example fails config check: %s", out)
	}
	if out, code := run("serve", "--config", bad); code != 2 || !strings.Contains(out, "leases.max_duration") {
		t.Errorf("serve with a bad config: exit %d\n%s", code, out)
	}
	if out, code := run("nonsense"); code != 2 || !strings.Contains(out, "unknown command") {
		t.Errorf("unknown command: exit %d\n%s", code, out)
	}
	if out, code := run("version"); code != 0 || !strings.HasPrefix(out, "malleable ") {
		t.Errorf("version: exit %d\n%s", code, out)
	}
	for _, args := range [][]string{{"serve", "--help"}, {"lease", "add", "--help"}, {"node", "--help"}, {"--help"}} {
		if out, code := run(args...); code != 0 || !strings.Contains(out, "Usage") {
			t.Errorf("%v: exit %d\n%s", args, code, out)
		}
	}
}

// TestREADMEWalkthrough runs the README's walkthrough verbatim against a
// fresh appliance: every command must succeed, except the one the README
// says is refused, which must exit 1 with a 409.
func TestREADMEWalkthrough(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "<!-- walkthrough:begin -->")
	block, _, ok2 := strings.Cut(block, "<!-- walkthrough:end -->")
	if !ok || !ok2 {
		t.Fatal("README.md has no walkthrough markers")
	}
	d := startDaemon(t, filepath.Join(t.TempDir(), "state"))
	ran, refused := 0, false
	expectRefusal := false
	for line := range strings.Lines(block) {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "#") {
			expectRefusal = strings.Contains(line, "refused")
			continue
		}
		rest, ok := strings.CutPrefix(line, "bin/malleable ")
		if !ok {
			continue
		}
		args, err := shellWords(rest)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		out, errOut, code := d.cli(t, args...)
		ran++
		switch {
		case expectRefusal:
			if code != 1 || !strings.Contains(errOut, "HTTP 409") {
				t.Errorf("%s: want a 409 refusal, got exit %d\n%s%s", line, code, out, errOut)
			}
			refused = true
		case code != 0:
			t.Errorf("%s: exit %d\n%s%s", line, code, out, errOut)
		}
	}
	if ran < 8 || !refused {
		t.Errorf("walkthrough ran %d commands (refusal seen: %v); the README block looks broken", ran, refused)
	}
}

// shellWords splits a command line the way sh would for the simple quoting
// the README uses: double and single quotes, no expansions.
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, errors.New("unterminated quote")
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// TestREADMEHardwareWalkthrough runs the README's hardware-lease walkthrough
// verbatim through bash — simulated BMCs, the CLI and curl against the
// broker — with only the addresses and the state directory swapped for the
// test's own.
func TestREADMEHardwareWalkthrough(t *testing.T) {
	requireTools(t, "bash", "curl", "ipmi_sim", "qemu-system-x86_64")
	block := readmeBlock(t, "hardware-walkthrough")
	d := startDaemon(t, filepath.Join(t.TempDir(), "state"))
	work, token := walkthroughDir(t, d)
	repo, _ := filepath.Abs("../..")
	simDir := filepath.Join(work, "bmcsim")
	port := freeUDPPortPair(t)
	script := strings.NewReplacer(
		"http://127.0.0.1:8780", "http://"+d.addr,
		"scripts/bmc-sim.sh", filepath.Join(repo, "scripts", "bmc-sim.sh"),
		"/tmp/malleable-bmcsim", simDir,
		"127.0.0.1:9623", fmt.Sprintf("127.0.0.1:%d", port),
		"127.0.0.1:9624", fmt.Sprintf("127.0.0.1:%d", port+1),
	).Replace(block)
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "MALLEABLE_SERVER="+d.addr, "MALLEABLE_TOKEN="+token,
		"BMCSIM_DIR="+simDir, fmt.Sprintf("BMCSIM_PORT=%d", port))
	t.Cleanup(func() {
		stop := exec.Command(filepath.Join(repo, "scripts", "bmc-sim.sh"), "stop")
		stop.Env = append(os.Environ(), "BMCSIM_DIR="+simDir)
		stop.Run()
	})
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("walkthrough failed: %v\n%s\n--- appliance log ---\n%s", err, out, d.log)
	}
	text := string(out)
	for _, want := range []string{
		`"result": true`, // alpha powers on
		"next lease to beta starts",
		"node rack-1 is not leased to alpha now and has no lease of it ahead",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("walkthrough output lacks %q", want)
		}
	}
	for _, re := range []string{`rack-1\s+alpha\s+beta\s+done\s+done`, `rack-1\s+on\s+beta`} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("walkthrough output does not match %s", re)
		}
	}
	// alpha's read after the handover is "off" while beta's node is on.
	after := text
	if loc := regexp.MustCompile(`rack-1\s+alpha\s+beta\s+done\s+done`).FindStringIndex(text); loc != nil {
		after = text[loc[1]:]
	}
	if !strings.Contains(after, `"held": false`) || !strings.Contains(after, `"power": "off"`) {
		t.Errorf("after the handover alpha does not read off")
	}
	if t.Failed() {
		t.Logf("walkthrough output:\n%s", out)
	}
}

// TestREADMEM2Walkthrough runs the README's M2 walkthrough verbatim
// through bash: a golden image, a tenant's disk on a real tgtd, and a qemu
// node that iPXE-boots it over iSCSI with CHAP and prints its greeting.
func TestREADMEM2Walkthrough(t *testing.T) {
	requireTools(t, "bash", "tgtd", "tgtadm", "qemu-system-x86_64", "nasm")
	block := readmeBlock(t, "m2-walkthrough")

	dir := t.TempDir()
	portal := freeTCPPort(t)
	cfg := filepath.Join(dir, "lab.ini")
	os.WriteFile(cfg, []byte(fmt.Sprintf("[m2]\nportal = 127.0.0.1:%d\nboot_portal = 10.0.2.2:%d\ntgtd_control_port = %d\n",
		portal, portal, 20000+portal%10000)), 0o600)
	d := startDaemon(t, filepath.Join(dir, "state"), "--config", cfg)
	work, token := walkthroughDir(t, d)
	repo, _ := filepath.Abs("../..")
	script := strings.NewReplacer(
		"http://127.0.0.1:8780", "http://"+d.addr,
		"scripts/node-sim.sh", filepath.Join(repo, "scripts", "node-sim.sh"),
		"/tmp/hello.img", filepath.Join(work, "hello.img"),
	).Replace(block)
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "MALLEABLE_SERVER="+d.addr, "MALLEABLE_TOKEN="+token)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("walkthrough failed: %v\n%s\n--- appliance log ---\n%s", err, out, d.log)
	}
	for _, want := range []string{"booted from its disk", "sanboot --keep iscsi:10.0.2.2::", "snapshot:web-1-golden"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("walkthrough output lacks %q:\n%s", want, out)
		}
	}
	d.stop(t)
}

// freeTCPPort returns a free TCP port on loopback.
func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// freeUDPPortPair finds p such that UDP ports p and p+1 on loopback are free.
func freeUDPPortPair(t *testing.T) int {
	t.Helper()
	for range 50 {
		a, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := a.LocalAddr().(*net.UDPAddr).Port
		b, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p+1))
		a.Close()
		if err == nil {
			b.Close()
			return p
		}
	}
	t.Fatal("no free pair of UDP ports")
	return 0
}

// TestM2Serve runs the M2 backend alone: its API answers with the admin
// token only, and SIGTERM stops it and its tgtd cleanly.
func TestM2Serve(t *testing.T) {
	if _, err := exec.LookPath("tgtd"); err != nil {
		if os.Getenv("MALLEABLE_REQUIRE_REAL") == "1" {
			t.Fatal("tgtd is not installed")
		}
		t.Skip("tgtd is not installed")
	}
	dir := t.TempDir()
	portal := freeTCPPort(t)
	cfg := filepath.Join(dir, "m2.ini")
	os.WriteFile(cfg, []byte(fmt.Sprintf("[m2]\nportal = 127.0.0.1:%d\ntgtd_control_port = %d\n", portal, 20000+portal%10000)), 0o600)
	a, cmd, logs := startM2Serve(t, cfg, filepath.Join(dir, "state"), "127.0.0.1:0")
	token, _ := os.ReadFile(filepath.Join(dir, "state", "admin.token"))
	for _, tc := range []struct {
		token string
		want  int
	}{{strings.TrimSpace(string(token)), 200}, {"wrong-token-0123456789", 401}, {"", 401}} {
		req, _ := http.NewRequest("GET", "http://"+a+"/m2/v1/images", nil)
		req.Header.Set("Authorization", "Bearer "+tc.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("token %q: %d, want %d", tc.token, resp.StatusCode, tc.want)
		}
	}
	// The CLI's image and disk commands speak the same /m2/v1 API.
	cli := func(args ...string) string {
		c := exec.Command(binary, args...)
		c.Env = []string{"MALLEABLE_SERVER=" + a, "MALLEABLE_TOKEN=" + strings.TrimSpace(string(token)), "HOME=" + dir}
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("malleable %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	img := filepath.Join(dir, "golden.img")
	os.WriteFile(img, append([]byte("golden"), make([]byte, 1<<20-6)...), 0o600) // whole 512-byte sectors
	cli("image", "import", "golden", "--file", img)
	cli("disk", "create", "acme", "web-1", "--image", "golden")

	// tgtd dies: the backend restarts it and re-creates the target.
	controlPort := strconv.Itoa(20000 + portal%10000)
	showTargets := func() string {
		out, _ := exec.Command("tgtadm", "-C", controlPort, "--lld", "iscsi", "--op", "show", "--mode", "target").CombinedOutput()
		return string(out)
	}
	const iqn = "iqn.2026-11.io.malleable:acme.web-1"
	if !strings.Contains(showTargets(), iqn) {
		t.Fatalf("target not in tgtd:\n%s", showTargets())
	}
	pid, err := exec.Command("pgrep", "-f", "tgtd -f --iscsi portal=127.0.0.1:"+strconv.Itoa(portal)).Output()
	if err != nil {
		t.Fatalf("find tgtd: %v", err)
	}
	exec.Command("kill", "-9", strings.Fields(string(pid))[0]).Run()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(showTargets(), iqn) {
		if time.Now().After(deadline) {
			t.Fatalf("tgtd was not restarted with its target:\n%s", logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("m2 serve exited with %v:\n%s", err, logs.String())
	}
}

// startM2Serve starts `malleable m2 serve` and returns its API's address,
// the process and its log.
func startM2Serve(t *testing.T, cfg, dataDir, listen string) (string, *exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(binary, "m2", "serve", "--config", cfg, "--data-dir", dataDir, "--listen", listen)
	var logs bytes.Buffer // read only once the process is done or on failure
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
			if rest, ok := strings.CutPrefix(sc.Text(), "malleable: M2 API on http://"); ok {
				a, _, _ := strings.Cut(rest, "/")
				addr <- a
			}
		}
	}()
	select {
	case a := <-addr:
		return a, cmd, &logs
	case <-time.After(30 * time.Second):
		t.Fatalf("m2 serve did not start:\n%s", logs.String())
	}
	return "", nil, nil
}

// requireTools skips the test when a tool is missing, or fails it under
// MALLEABLE_REQUIRE_REAL=1.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("MALLEABLE_REQUIRE_REAL") == "1" {
				t.Fatalf("%s is not installed", tool)
			}
			t.Skipf("%s is not installed", tool)
		}
	}
}

// readmeBlock returns the shell block of the README between the markers
// <!-- name:begin --> and <!-- name:end -->.
func readmeBlock(t *testing.T, name string) string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, _ := strings.Cut(string(readme), "<!-- "+name+":begin -->")
	block, _, ok := strings.Cut(block, "<!-- "+name+":end -->")
	if !ok {
		t.Fatalf("README.md has no %s markers", name)
	}
	block = strings.TrimPrefix(strings.TrimSpace(block), "```sh")
	return strings.TrimSuffix(strings.TrimSpace(block), "```")
}

// walkthroughDir makes a working directory whose bin/malleable is the
// binary under test, as in a checkout, and returns it with d's admin token.
func walkthroughDir(t *testing.T, d *daemon) (dir, token string) {
	t.Helper()
	tok, err := os.ReadFile(filepath.Join(d.dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	os.Mkdir(filepath.Join(dir, "bin"), 0o755)
	if err := os.Symlink(binary, filepath.Join(dir, "bin", "malleable")); err != nil {
		t.Fatal(err)
	}
	return dir, strings.TrimSpace(string(tok))
}
