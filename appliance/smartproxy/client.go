package smartproxy

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/malleable-cloud/malleable/appliance/broker/brokerapi"
	"github.com/malleable-cloud/malleable/appliance/m2"
)

// Client reaches the appliance with one tenant's broker token: its
// broker API (brokerapi.Client) and its M2 API (m2.Client), over one
// connection pool. It holds no policy: the appliance decides what the
// token may do. It is safe for concurrent use.
type Client struct {
	Broker *brokerapi.Client
	M2     *m2.Client
}

var (
	_ Broker  = (*brokerapi.Client)(nil)
	_ Storage = (*m2.Client)(nil)
)

// NewClient returns a client of the appliance at baseURL (for example
// http://127.0.0.1:8780) that authenticates with token. A nil hc gets a
// client with pooled keep-alive connections. Calls are bounded by their
// context only: callers set the deadline.
func NewClient(baseURL, token string, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{Transport: newTransport(nil)}
	}
	return &Client{Broker: brokerapi.NewClient(baseURL, token, hc), M2: m2.NewClient(baseURL, token, hc)}
}

// OpenClient returns a client configured by c: the token is read from
// c.TokenFile and, for an https URL, the appliance's certificate is checked
// against c.CAFile (the system roots when empty).
func OpenClient(c BrokerConfig) (*Client, error) {
	tok, err := readSecretFile(c.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("broker.token_file: %w", err)
	}
	var tc *tls.Config
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("broker.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("broker.ca_file: %s holds no PEM certificate", c.CAFile)
		}
		tc = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return NewClient(c.URL, tok, &http.Client{Transport: newTransport(tc)}), nil
}

// newTransport keeps enough idle connections to the appliance that
// Foreman's concurrent power-status reads do not reconnect each time.
func newTransport(tc *tls.Config) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 256
	tr.MaxIdleConnsPerHost = 128
	tr.IdleConnTimeout = 90 * time.Second
	if tc != nil {
		tr.TLSClientConfig = tc
	}
	return tr
}

// readSecretFile reads a one-line secret (token, password), without its
// surrounding white space. A file group or others may read is refused, as
// the appliance refuses its own admin token.
func readSecretFile(path string) (string, error) {
	if err := checkPrivate(path); err != nil {
		return "", err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

// checkPrivate refuses a secret file that group or others may read.
func checkPrivate(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s has mode %04o: it must not be readable by group or others (chmod 600 %s)", path, perm, path)
	}
	return nil
}
