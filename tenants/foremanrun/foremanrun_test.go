package foremanrun

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/tenants/docker"
)

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func TestValidation(t *testing.T) {
	if _, err := New(nil, Options{SeedAdminPassword: "short"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("short seed password: %v", err)
	}
	if _, err := New(nil, Options{SeedAdminPassword: "has a space in it"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("seed password with spaces: %v", err)
	}
	ok := ForemanSpec{Tenant: "acme", NetworkID: "n", DBPassword: randHex(12), EncryptionKey: randHex(16), FQDN: "acme.example.com"}
	if err := ok.validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*ForemanSpec){
		"tenant":      func(s *ForemanSpec) { s.Tenant = "Acme'; DROP" },
		"password":    func(s *ForemanSpec) { s.DBPassword = "x'y" },
		"key":         func(s *ForemanSpec) { s.EncryptionKey = "not-hex" },
		"fqdn":        func(s *ForemanSpec) { s.FQDN = "a b" },
		"no network":  func(s *ForemanSpec) { s.NetworkID = "" },
		"short pw":    func(s *ForemanSpec) { s.DBPassword = "abc" },
		"newline key": func(s *ForemanSpec) { s.EncryptionKey = randHex(16) + "\n" },
	} {
		t.Run(name, func(t *testing.T) {
			s := ok
			mut(&s)
			if err := s.validate(); !errors.Is(err, ErrInvalid) {
				t.Errorf("err = %v, want ErrInvalid", err)
			}
		})
	}
	if got := dbName("a-b-c"); got != "t_a_b_c" {
		t.Errorf("dbName = %q", got)
	}
	if v := scramVerifier("secret-password"); !strings.HasPrefix(v, "SCRAM-SHA-256$4096:") || strings.Contains(v, "secret") {
		t.Errorf("verifier %q", v)
	}
}

// TestForemanTemplateAndCold runs real Foremans from the kit's images:
// two tenants from the template in parallel, one cold, and checks that a
// tenant's Foreman cannot open another tenant's database.
func TestForemanTemplateAndCold(t *testing.T) {
	if testing.Short() {
		t.Skip("real Foremans take minutes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	owner := "mf" + randHex(4)
	rt, err := docker.New(ctx, docker.Options{Owner: owner, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Skipf("SKIP LOUDLY: no Docker engine (%v)", err)
	}
	defer rt.Close()
	for _, img := range []string{DefaultForemanImage, DefaultPostgresImage} {
		if _, err := rt.ImageID(ctx, img); err != nil {
			t.Skipf("SKIP LOUDLY: %s absent (%v): build it with ../shared/foreman/build.sh", img, err)
		}
	}
	r, err := New(rt, Options{SeedAdminPassword: "seed-" + randHex(8), Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	tenants := []string{"ta", "tb", "tc", "td"}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		for _, tn := range tenants {
			if err := rt.RemoveTenant(ctx, tn); err != nil {
				t.Logf("cleanup %s: %v", tn, err)
			}
		}
		cs, _ := rt.List(ctx, "")
		for _, c := range cs {
			_ = rt.Remove(ctx, c.ID)
		}
		if n, err := rt.EnsureSharedNetwork(ctx, pgNetwork); err == nil {
			_ = rt.RemoveNetwork(ctx, n.ID)
		}
		if err := rt.RemoveVolume(ctx, owner+"-postgres-data"); err != nil {
			t.Logf("cleanup volume: %v", err)
		}
	})

	pw := map[string]string{}
	specs := map[string]ForemanSpec{}
	for _, tn := range tenants {
		n, err := rt.EnsureNetwork(ctx, tn)
		if err != nil {
			t.Fatal(err)
		}
		pw[tn] = randHex(12)
		specs[tn] = ForemanSpec{Tenant: tn, NetworkID: n.ID, DBPassword: pw[tn], EncryptionKey: randHex(16),
			FQDN: tn + ".example.com", Cold: tn == "tc"}
	}
	certPEM, keyPEM := selfSigned(t, "ta.example.com")
	ta := specs["ta"]
	ta.ClientCert, ta.ClientKey, ta.ProxyCA = certPEM, keyPEM, certPEM
	specs["ta"] = ta

	// The template: built once, on the first tenant database.
	start := time.Now()
	if err := r.EnsureDatabase(ctx, "ta", pw["ta"]); err != nil {
		t.Fatal(err)
	}
	t.Logf("MEASURED shared postgres + template (migrate+seed) + first clone: %v", time.Since(start).Round(time.Second))

	// Two tenants from the template at once.
	var wg sync.WaitGroup
	got := map[string]Foreman{}
	var mu sync.Mutex
	for _, tn := range []string{"ta", "tb"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := r.EnsureForeman(ctx, specs[tn])
			if err != nil {
				t.Errorf("EnsureForeman %s: %v", tn, err)
				return
			}
			mu.Lock()
			got[tn] = f
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, tn := range []string{"ta", "tb"} {
		t.Logf("MEASURED template path, two at once: %s Foreman container start -> ping 200 in %v", tn, got[tn].Ready.Round(100*time.Millisecond))
		pingOK(t, got[tn].URL)
	}
	if got["ta"].URL == got["tb"].URL {
		t.Error("two tenants share one URL")
	}

	// The client certificate files: the Foreman user's, 0400, applied by the entrypoint.
	out, _, code, err := rt.Exec(ctx, got["ta"].Container.ID, []string{"stat", "-c", "%n %a %u", "/etc/foreman/client_cert.pem", "/etc/foreman/client_key.pem", "/etc/foreman/proxy_ca.pem"})
	if err != nil || code != 0 || strings.Count(out, " 400 1001") != 3 {
		t.Errorf("certificate files: %q exit %d err %v; want three files 0400 owned by 1001", out, code, err)
	}
	if logs, _ := rt.Logs(ctx, got["ta"].Container.ID, 200); !strings.Contains(logs, "ssl_priv_key: /etc/foreman/client_key.pem") {
		t.Errorf("the entrypoint did not apply the client key; logs:\n%s", logs)
	}

	// Each clone has its own instance_id and no copied sessions.
	pg, err := r.ensurePostgres(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for _, tn := range []string{"ta", "tb"} {
		out, err := r.psql(ctx, pg, dbName(tn), "SELECT value FROM settings WHERE name = 'instance_id'")
		if err != nil {
			t.Fatal(err)
		}
		ids[tn] = out
	}
	if ids["ta"] == "" || ids["ta"] == ids["tb"] {
		t.Errorf("instance_id ta %q tb %q: want set and distinct", ids["ta"], ids["tb"])
	}

	// Tenant ta's Foreman container: its own database opens; tb's and the
	// template do not, not even with tb's password.
	connect := func(db, user, password string) (string, int) {
		out, errOut, code, err := rt.Exec(ctx, got["ta"].Container.ID, []string{"ruby", "-rpg", "-e",
			`PG.connect(host: "postgres", dbname: ARGV[0], user: ARGV[1], password: ARGV[2]).exec("SELECT 1"); puts "connected"`,
			db, user, password})
		if err != nil {
			t.Fatal(err)
		}
		return out + errOut, code
	}
	if out, code := connect(dbName("ta"), dbName("ta"), pw["ta"]); code != 0 {
		t.Errorf("ta to its own database: exit %d %s", code, out)
	}
	for _, c := range []struct{ db, user, pw string }{
		{dbName("tb"), dbName("ta"), pw["ta"]},
		{dbName("tb"), dbName("tb"), pw["ta"]},
		{"postgres", dbName("ta"), pw["ta"]},
	} {
		if out, code := connect(c.db, c.user, c.pw); code == 0 || !strings.Contains(out, "FATAL") {
			t.Errorf("from ta's Foreman to %s as %s: exit %d %s; want refused", c.db, c.user, code, out)
		}
	}

	// Already running with the same spec: left alone.
	again, err := r.EnsureForeman(ctx, specs["ta"])
	if err != nil || again.Container.ID != got["ta"].Container.ID || again.Ready != 0 {
		t.Errorf("second EnsureForeman ta: %v, id %s vs %s, ready %v", err, again.Container.ID, got["ta"].Container.ID, again.Ready)
	}

	// The cold path, alone, for comparison.
	cold, err := r.EnsureForeman(ctx, specs["tc"])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("MEASURED cold path (migrate+seed+server, own empty database): tc container start -> ping 200 in %v", cold.Ready.Round(100*time.Millisecond))
	pingOK(t, cold.URL)

	// The template path alone, under the same conditions as the cold one.
	warm, err := r.EnsureForeman(ctx, specs["td"])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("MEASURED template path, alone: td container start -> ping 200 in %v", warm.Ready.Round(100*time.Millisecond))
	pingOK(t, warm.URL)

	for range 2 {
		if err := r.DropDatabase(ctx, "tc"); err != nil {
			t.Errorf("DropDatabase: %v", err)
		}
	}
}

// selfSigned returns a throwaway certificate and key (PEM).
func selfSigned(t *testing.T, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func pingOK(t *testing.T, base string) {
	t.Helper()
	resp, err := http.Get(base + "/api/v2/ping")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("%s ping: %d", base, resp.StatusCode)
	}
}
