package smartproxy

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
)

// CheckFiles checks the files a valid cfg names, as `smart-proxy config
// check` does before the proxy starts: secrets (token, password, server
// key) must exist, be non-empty and be private to their owner; the
// certificates must hold PEM certificates. Each problem names its
// section.key.
func CheckFiles(cfg Config) []string {
	var p []string
	secret := func(key, path string) {
		if path == "" {
			return // Validate reported it
		}
		if _, err := readSecretFile(path); err != nil {
			p = append(p, fmt.Sprintf("%s: %v", key, err))
		}
	}
	certs := func(key, path string) {
		if path == "" {
			return
		}
		if err := checkPEMCertificate(path); err != nil {
			p = append(p, fmt.Sprintf("%s: %v", key, err))
		}
	}
	if cfg.Proxy.HTTPSListen != "" {
		certs("smart_proxy.ssl_certificate", cfg.Proxy.SSLCertificate)
		secret("smart_proxy.ssl_private_key", cfg.Proxy.SSLPrivateKey)
		certs("smart_proxy.ssl_ca_file", cfg.Proxy.SSLCAFile)
	}
	secret("broker.token_file", cfg.Broker.TokenFile)
	certs("broker.ca_file", cfg.Broker.CAFile)
	secret("bmc.password_file", cfg.BMC.PasswordFile)
	return p
}

// checkPEMCertificate reports whether path holds at least one PEM
// certificate that parses.
func checkPEMCertificate(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			return fmt.Errorf("%s holds no PEM certificate", path)
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		return nil
	}
}
