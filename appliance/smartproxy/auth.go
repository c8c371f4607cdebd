package smartproxy

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"mime"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Resolver is the DNS a plain-HTTP client is identified by; *net.Resolver
// implements it.
type Resolver interface {
	LookupAddr(ctx context.Context, addr string) ([]string, error)
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// serverTLS is the HTTPS listener's TLS: Foreman's client certificate is
// optional at the handshake (the Ruby proxy's VERIFY_PEER without
// FAIL_IF_NO_PEER_CERT) but, if sent, must chain to ssl_ca_file, so a
// certificate from another CA never reaches a handler.
func serverTLS(c ProxyConfig) (*tls.Config, error) {
	if err := checkPrivate(c.SSLPrivateKey); err != nil {
		return nil, fmt.Errorf("smart_proxy.ssl_private_key: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(c.SSLCertificate, c.SSLPrivateKey)
	if err != nil {
		return nil, fmt.Errorf("smart_proxy.ssl_certificate/ssl_private_key: %w", err)
	}
	pem, err := os.ReadFile(c.SSLCAFile)
	if err != nil {
		return nil, fmt.Errorf("smart_proxy.ssl_ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("smart_proxy.ssl_ca_file: %s holds no PEM certificate", c.SSLCAFile)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// authorize applies the Ruby proxy's trusted_hosts and client-certificate
// filters (lib/sinatra/authorization.rb) to a request for an authorized
// module; pathInfo is the path below the module's mount point, which the
// refusal names. It returns the 403 message, or "" to proceed.
func (s *Server) authorize(r *http.Request, pathInfo string) string {
	var fqdn string
	if r.TLS != nil {
		if len(r.TLS.PeerCertificates) == 0 {
			return "could not read client cert from environment"
		}
		fqdn = r.TLS.PeerCertificates[0].Subject.CommonName
		if fqdn == "" {
			return "could not read CN from the client certificate"
		}
	} else {
		var msg string
		if fqdn, msg = s.remoteFQDN(r); msg != "" {
			return msg
		}
	}
	fqdn = strings.ToLower(fqdn)
	if !slices.Contains(s.trusted, fqdn) {
		// The Ruby proxy's words, naming this proxy's own setting
		// rather than its settings.yml.
		return fmt.Sprintf("Untrusted client %s attempted to access %s. Check [smart_proxy] trusted_hosts in this smart-proxy's INI file", fqdn, pathInfo)
	}
	return ""
}

// remoteFQDN names a plain-HTTP client by the reverse DNS of its address,
// verified forward when forward_verify is on, as the Ruby proxy does.
func (s *Server) remoteFQDN(r *http.Request) (string, string) {
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil || ip == "" {
		return "", "could not get remote address from environment"
	}
	ip, _, _ = strings.Cut(ip, "%") // an IPv6 zone
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	names, err := s.resolver.LookupAddr(ctx, ip)
	if err != nil || len(names) == 0 {
		return "", fmt.Sprintf("unable to resolve hostname for ip address %s\n\n%v", ip, err)
	}
	fqdn := strings.TrimSuffix(names[0], ".")
	if !s.cfg.Proxy.ForwardVerify {
		return fqdn, ""
	}
	addrs, err := s.resolver.LookupHost(ctx, fqdn)
	if err != nil {
		return "", fmt.Sprintf("could not forward verify the remote hostname - %s (%s)\n\n%v", fqdn, ip, err)
	}
	if !slices.Contains(addrs, ip) {
		return "", fmt.Sprintf("untrusted client has no matching forward DNS lookup - %s (%s)", fqdn, ip)
	}
	return fqdn, ""
}

// acceptsJSON is Sinatra's request.accept?("application/json"): true when
// the request has no Accept header or accepts JSON through any range.
func acceptsJSON(r *http.Request) bool {
	h := strings.TrimSpace(r.Header.Get("Accept"))
	if h == "" {
		return true
	}
	for part := range strings.SplitSeq(h, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		if q, err := strconv.ParseFloat(params["q"], 64); err == nil && q == 0 {
			continue // explicitly refused
		}
		switch mt {
		case "application/json", "application/*", "*/*":
			return true
		}
	}
	return false
}

// credentials extracts the HTTP Basic credentials of a BMC route, with the
// Ruby proxy's answers: 401 "unauthorized" when there are none, 401
// "bad_authentication_request, ..." when they are not Basic.
func credentials(r *http.Request) (user, pass string, err error) {
	if r.Header.Get("Authorization") == "" {
		return "", "", &halt{http.StatusUnauthorized, "unauthorized"}
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return "", "", &halt{http.StatusUnauthorized, "bad_authentication_request, credentials are not in auth.basic format"}
	}
	return user, pass, nil
}

// validBMCLogin reports, in constant time, whether user and pass are the
// tenant's virtual BMC identity. Both are always compared.
func (s *Server) validBMCLogin(user, pass string) bool {
	u := subtle.ConstantTimeCompare([]byte(user), s.bmcUser)
	p := subtle.ConstantTimeCompare([]byte(pass), s.bmcPass)
	return u&p == 1
}
