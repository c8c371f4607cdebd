package smartproxy

import (
	"os"
	"strings"
	"testing"

	"github.com/malleable-cloud/malleable/appliance/smartproxy/proxytest"
)

// TestSecretFilesMustBePrivate: a broker token, BMC password or server key
// that group or others can read is refused, naming the file and the fix,
// as the appliance refuses its own admin token.
func TestSecretFilesMustBePrivate(t *testing.T) {
	tests := map[string]struct {
		file func(Config) string
		open func(Config) error
		key  string
	}{
		"broker token": {func(c Config) string { return c.Broker.TokenFile },
			func(c Config) error { _, err := OpenClient(c.Broker); return err }, "broker.token_file"},
		"BMC password": {func(c Config) string { return c.BMC.PasswordFile },
			func(c Config) error {
				_, err := New(c, Options{Broker: newFakeBroker(), Storage: newStubStorage()})
				return err
			}, "bmc.password_file"},
		"server key": {func(c Config) string { return c.Proxy.SSLPrivateKey },
			func(c Config) error {
				_, err := New(c, Options{Broker: newFakeBroker(), Storage: newStubStorage()})
				return err
			}, "smart_proxy.ssl_private_key"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(t, t.TempDir(), proxytest.NewCA(t, "Malleable test CA"))
			if err := tc.open(cfg); err != nil {
				t.Fatalf("mode 0600: %v", err)
			}
			path := tc.file(cfg)
			if err := os.Chmod(path, 0o644); err != nil {
				t.Fatal(err)
			}
			err := tc.open(cfg)
			if err == nil {
				t.Fatalf("%s with mode 0644 accepted", path)
			}
			for _, want := range []string{tc.key, path, "0644", "chmod 600"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			problems := CheckFiles(cfg)
			if len(problems) != 1 || !strings.Contains(problems[0], tc.key) || !strings.Contains(problems[0], "chmod 600") {
				t.Errorf("CheckFiles = %q, want one problem naming %s", problems, tc.key)
			}
		})
	}
}

// TestCheckFiles: config check names every file that is missing or unusable.
func TestCheckFiles(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), proxytest.NewCA(t, "Malleable test CA"))
	if p := CheckFiles(cfg); len(p) != 0 {
		t.Fatalf("valid files: %q", p)
	}
	os.WriteFile(cfg.Proxy.SSLCAFile, []byte("not a certificate"), 0o644)
	os.Remove(cfg.Broker.TokenFile)
	os.WriteFile(cfg.BMC.PasswordFile, []byte("\n"), 0o600)
	got := strings.Join(CheckFiles(cfg), "\n")
	for _, want := range []string{"smart_proxy.ssl_ca_file: " + cfg.Proxy.SSLCAFile + " holds no PEM certificate",
		"broker.token_file: ", "no such file", "bmc.password_file: " + cfg.BMC.PasswordFile + " is empty"} {
		if !strings.Contains(got, want) {
			t.Errorf("CheckFiles lacks %q:\n%s", want, got)
		}
	}
}
