package server_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/m2/server"
)

// trickle is a slow client's request body: size bytes of data in chunks,
// one every interval.
type trickle struct {
	data     []byte
	chunk    int
	interval time.Duration
	sent     int
}

func (r *trickle) Read(p []byte) (int, error) {
	if r.sent == len(r.data) {
		return 0, io.EOF
	}
	if r.sent > 0 {
		time.Sleep(r.interval)
	}
	n := copy(p, r.data[r.sent:min(r.sent+r.chunk, len(r.data))])
	r.sent += n
	return n, nil
}

// shortTimeoutServer serves the env's backend like the appliance does,
// with general read and write timeouts of one second, and the given route
// deadlines.
func shortTimeoutServer(e *env, hc server.HandlerConfig) *httptest.Server {
	hc.Backend, hc.Authorize, hc.Logger = e.backend, authorize, logger(e.t)
	s := httptest.NewUnstartedServer(server.Handler(hc))
	s.Config.ReadTimeout, s.Config.WriteTimeout = time.Second, time.Second
	s.Start()
	e.t.Cleanup(s.Close)
	return s
}

// upload PUTs a trickled image to srv and returns the status and body.
func upload(t *testing.T, srv *httptest.Server, name string, body *trickle) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, srv.URL+"/m2/v1/images/"+name, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(body.data))
	req.Header.Set(callerHeader, "admin")
	resp, err := srv.Client().Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

// TestStreamingDeadlines: an upload slower than the server's general
// timeouts succeeds within its route's own deadline; one past the route's
// deadline for reading the body gets 408, and work past the route's
// deadline gets 504 and leaves nothing behind, never 500.
func TestStreamingDeadlines(t *testing.T) {
	e := newEnv(t, "")
	e.importImage("golden", imageSize, "M2-DEADLINE")
	data := make([]byte, 256<<10)
	rand.Read(data)

	// 16 chunks 150 ms apart: about 2.3 s, past the general 1 s timeouts.
	slow := func() *trickle { return &trickle{data: data, chunk: 16 << 10, interval: 150 * time.Millisecond} }
	roomy := shortTimeoutServer(e, server.HandlerConfig{Timeouts: server.Timeouts{Transfer: 20 * time.Second, Operation: 20 * time.Second}})
	if status, body := upload(t, roomy, "slow", slow()); status != http.StatusCreated {
		t.Fatalf("slow upload within the route's deadline: status %d, want 201: %s", status, body)
	}
	var img struct{ SHA256 string }
	e.must(http.StatusOK, http.MethodGet, "/m2/v1/images/slow", "admin", nil, &img)
	if img.SHA256 != sha256Hex(data) {
		t.Errorf("uploaded image sha256 %s, want %s", img.SHA256, sha256Hex(data))
	}

	before := e.state()
	tight := shortTimeoutServer(e, server.HandlerConfig{Timeouts: server.Timeouts{Transfer: 700 * time.Millisecond, Operation: 20 * time.Second}})
	status, body := upload(t, tight, "too-slow", slow())
	if status != http.StatusRequestTimeout || !strings.Contains(body, "700ms") {
		t.Errorf("upload past the route's body deadline: status %d, want 408 naming the deadline: %s", status, body)
	}

	golden, _ := goldenImage(t, imageSize, "M2-LATE", 0.001)
	busy := shortTimeoutServer(e, server.HandlerConfig{Timeouts: server.Timeouts{Transfer: 20 * time.Second, Operation: time.Millisecond}})
	for _, rq := range []struct{ method, path, body string }{
		{http.MethodPost, "/m2/v1/projects/acme/disks", `{"name":"late","image":"golden"}`},
		{http.MethodPost, "/m2/v1/images", fmt.Sprintf(`{"name":"late","path":%q}`, golden)},
	} {
		req, _ := http.NewRequest(rq.method, busy.URL+rq.path, bytes.NewBufferString(rq.body))
		req.Header.Set(callerHeader, "admin")
		resp, err := busy.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusGatewayTimeout {
			t.Errorf("%s %s past the route's work deadline: status %d, want 504: %s", rq.method, rq.path, resp.StatusCode, out)
		}
	}
	if after := e.state(); !after.equal(before) {
		t.Errorf("timed-out requests left something behind:\nbefore %+v\nafter  %+v", before, after)
	}
}
