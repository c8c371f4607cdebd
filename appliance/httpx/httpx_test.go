package httpx

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

type sample struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
}

var errGone = errors.New("gone")

func testServer(t *testing.T) *httptest.Server {
	t.Helper()
	rs := Responder{Log: slog.New(slog.DiscardHandler), Classify: func(err error) *Error {
		if errors.Is(err, errGone) {
			return Errorf(http.StatusNotFound, "%v", err)
		}
		return nil
	}}
	mux := http.NewServeMux()
	mux.Handle("POST /echo", rs.Handle(func(w http.ResponseWriter, r *http.Request) error {
		var s sample
		if err := DecodeJSON(w, r, &s, 64); err != nil {
			return err
		}
		WriteJSON(w, http.StatusCreated, s)
		return nil
	}))
	mux.Handle("GET /gone", rs.Handle(func(http.ResponseWriter, *http.Request) error { return errGone }))
	mux.Handle("GET /boom", rs.Handle(func(http.ResponseWriter, *http.Request) error { return errors.New("disk on fire") }))
	mux.Handle("GET /script", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("#!ipxe\n")) }))
	srv := httptest.NewServer(Secured(mux))
	t.Cleanup(srv.Close)
	return srv
}

// TestDecodeStatuses pins the answer each body mistake gets: every API
// decodes through DecodeJSON, so these are the statuses on all of them.
func TestDecodeStatuses(t *testing.T) {
	srv := testServer(t)
	for _, tc := range []struct {
		name, ctype, body string
		status            int
		msg               string
	}{
		{"ok", "application/json", `{"name":"a","count":1}`, 201, ""},
		{"charset", "application/json; charset=utf-8", `{"name":"a"}`, 201, ""},
		{"no content type", "", `{"name":"a"}`, 201, ""},
		{"wrong type", "text/plain", `{"name":"a"}`, 415, "body must be application/json"},
		{"too large", "application/json", `{"name":"` + strings.Repeat("x", 100) + `"}`, 413, "larger than 64 bytes"},
		{"empty", "application/json", ``, 400, "a JSON object is required"},
		{"malformed", "application/json", `{"name":`, 400, "body:"},
		{"unknown field", "application/json", `{"nam":"a"}`, 400, `unknown field "nam"`},
		{"wrong field type", "application/json", `{"count":"x"}`, 400, "count: must be a JSON int"},
		{"trailing data", "application/json", `{"name":"a"} {}`, 400, "unexpected data after the JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/echo", strings.NewReader(tc.body))
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			c := &Caller{Base: srv.URL}
			_, err := c.Send(req, nil)
			if tc.status == 201 {
				if err != nil {
					t.Fatalf("want success, got %v", err)
				}
				return
			}
			var se *StatusError
			if !errors.As(err, &se) || se.Status != tc.status || !strings.Contains(se.Message, tc.msg) {
				t.Fatalf("want %d %q, got %v", tc.status, tc.msg, err)
			}
		})
	}
}

func TestCallerRoundTripAndErrors(t *testing.T) {
	srv := testServer(t)
	c := &Caller{Base: srv.URL, Token: "t0ken"}
	var got sample
	status, err := c.DoStatus(context.Background(), http.MethodPost, "/echo", sample{Name: "n", Count: 2}, &got)
	if err != nil || status != http.StatusCreated || got != (sample{"n", 2}) {
		t.Fatalf("round trip: %d %+v %v", status, got, err)
	}
	err = c.Do(context.Background(), http.MethodGet, "/gone", nil, nil)
	if StatusOf(err) != http.StatusNotFound || !strings.Contains(err.Error(), "gone (HTTP 404)") {
		t.Fatalf("classified error: %v", err)
	}
	err = c.Do(context.Background(), http.MethodGet, "/boom", nil, nil)
	if StatusOf(err) != 500 || strings.Contains(err.Error(), "fire") {
		t.Fatalf("an unexpected failure must answer 500 without its cause: %v", err)
	}
	b, err := c.Text(context.Background(), "/script", 1024)
	if err != nil || string(b) != "#!ipxe\n" {
		t.Fatalf("text: %q %v", b, err)
	}
	if err := c.Do(context.Background(), http.MethodGet, "/m2/v1/boot/secret-token", nil, nil); StatusOf(err) != 404 {
		t.Fatalf("unknown path: %v", err)
	}
}

func TestCallerRedactsBootTokensFromTransportErrors(t *testing.T) {
	c := &Caller{Base: "http://127.0.0.1:1"}
	err := c.Do(context.Background(), http.MethodGet, "/m2/v1/boot/s3cret", nil, nil)
	if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "/m2/v1/boot/<token>") {
		t.Fatalf("want a redacted transport error, got %v", err)
	}
}

func TestSecuredAndLogged(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	h := Logged(log, slog.LevelInfo, Secured(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	})))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/m2/v1/boot/s3cret?x=1", nil))
	if rec.Header().Get("X-Content-Type-Options") != "nosniff" || rec.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("security headers missing: %v", rec.Header())
	}
	line := buf.String()
	if !strings.Contains(line, "status=418") || strings.Contains(line, "s3cret") || !strings.Contains(line, "path=/m2/v1/boot/<token>") {
		t.Errorf("log line: %s", line)
	}
}

func TestTokenMatches(t *testing.T) {
	if TokenMatches("", "") || TokenMatches("a", "") || !TokenMatches("abc", "abc") || TokenMatches("abd", "abc") {
		t.Fatal("TokenMatches")
	}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	if _, ok := BearerToken(r); ok {
		t.Fatal("no header, no token")
	}
	r.Header.Set("Authorization", "Bearer  abc ")
	if tok, ok := BearerToken(r); !ok || tok != "abc" {
		t.Fatalf("BearerToken: %q %v", tok, ok)
	}
}

func TestProtectedRefusesCrossOriginWrites(t *testing.T) {
	h := Protected(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	for _, tc := range []struct {
		method, site string
		want         int
	}{{http.MethodPost, "cross-site", 403}, {http.MethodGet, "cross-site", 204}, {http.MethodPost, "same-origin", 204}} {
		r := httptest.NewRequest(tc.method, "/x", nil)
		r.Header.Set("Sec-Fetch-Site", tc.site)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tc.want || w.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s from %s: %d %v, want %d", tc.method, tc.site, w.Code, w.Header(), tc.want)
		}
		if tc.want == 403 && !strings.Contains(w.Body.String(), `"error": "cross-origin request refused"`) {
			t.Errorf("refusal body: %s", w.Body)
		}
	}
}
