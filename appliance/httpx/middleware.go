package httpx

import (
	"crypto/subtle"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// StatusRecorder remembers the status a handler answered (200 when it
// wrote a body without one, 0 when it wrote nothing).
type StatusRecorder struct {
	http.ResponseWriter
	Status int
}

// WriteHeader records the first status.
func (s *StatusRecorder) WriteHeader(code int) {
	if s.Status == 0 {
		s.Status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

// Write records an implicit 200.
func (s *StatusRecorder) Write(b []byte) (int, error) {
	if s.Status == 0 {
		s.Status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *StatusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Logged logs every request at level: method, path (boot tokens
// redacted, never the query), status, duration, the client certificate's
// common name, the remote address and the caller's X-Request-Id.
func Logged(log *slog.Logger, level slog.Level, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &StatusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if rec.Status == 0 {
			rec.Status = http.StatusOK
		}
		var cn string
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			cn = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		log.LogAttrs(r.Context(), level, "request", slog.String("method", r.Method),
			slog.String("path", RedactPath(r.URL.Path)), slog.Int("status", rec.Status),
			slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000),
			slog.String("client_cn", cn), slog.String("remote", r.RemoteAddr),
			slog.String("request_id", r.Header.Get("X-Request-Id")))
	})
}

// Secured sets the headers that keep API answers out of caches, frames
// and browsers' content sniffing.
func Secured(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Frame-Options", "DENY")
		next.ServeHTTP(w, r)
	})
}

// bootPrefixes are where M2 serves boot scripts by their token.
var bootPrefixes = [...]string{"/m2/v1/boot/", "/m2/boot/"}

// RedactPath hides boot tokens, which are credentials, from logs and
// errors.
func RedactPath(p string) string {
	for _, prefix := range bootPrefixes {
		if strings.HasPrefix(p, prefix) {
			return prefix + "<token>"
		}
	}
	return p
}

// BearerToken returns the request's bearer token, if it sent one.
func BearerToken(r *http.Request) (string, bool) {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	got = strings.TrimSpace(got)
	return got, ok && got != ""
}

// TokenMatches compares a presented token with the expected one in
// constant time; an empty expected token matches nothing.
func TokenMatches(got, want string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// Unauthorized answers 401 with a bearer challenge for realm.
func Unauthorized(w http.ResponseWriter, realm, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="`+realm+`"`)
	WriteError(w, &Error{Status: http.StatusUnauthorized, Message: msg})
}

// Protected is Secured around net/http's cross-origin protection: a
// browser's cross-origin write is refused with a JSON 403 before next runs.
// Every API listener of the appliance wraps its authentication in it.
func Protected(next http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		WriteError(w, Errorf(http.StatusForbidden, "cross-origin request refused"))
	}))
	return Secured(cop.Handler(next))
}
