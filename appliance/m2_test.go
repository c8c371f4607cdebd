package appliance

import (
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/malleable-cloud/malleable/appliance/iscsi/iscsitest"
	"github.com/malleable-cloud/malleable/appliance/lease"
	"github.com/malleable-cloud/malleable/appliance/secrets"
	"github.com/malleable-cloud/malleable/appliance/store"
)

// slowBody is a slow client's upload: data in 16 KiB chunks, one every
// interval.
type slowBody struct {
	data     []byte
	interval time.Duration
	sent     int
}

func (b *slowBody) Read(p []byte) (int, error) {
	if b.sent == len(b.data) {
		return 0, io.EOF
	}
	if b.sent > 0 {
		time.Sleep(b.interval)
	}
	n := copy(p, b.data[b.sent:min(b.sent+16<<10, len(b.data))])
	b.sent += n
	return n, nil
}

// TestM2SlowUploadThroughAppliance: through the appliance's whole handler
// chain (authentication, cross-origin protection, metrics, router), an
// image upload slower than the server's general read and write timeouts
// still succeeds within [m2] transfer_timeout.
func TestM2SlowUploadThroughAppliance(t *testing.T) {
	iscsitest.Require(t, "tgtd", "tgtadm")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cfg := DefaultConfig(t.TempDir())
	cfg.M2.Portal = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cfg.M2.TgtdControlPort = 20000 + port%10000
	cfg.M2.TransferTimeout, cfg.M2.OperationTimeout = 20*time.Second, 20*time.Second
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	m, err := startM2(t.Context(), cfg, secrets.NewMemory(), log)
	if err != nil {
		t.Fatal(err)
	}
	defer m.close(t.Context())
	st, err := store.Open(t.Context(), filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv := httptest.NewUnstartedServer(Parts{Store: st, Limits: lease.DefaultLimits(), Token: testToken, M2: m.backend,
		M2Timeouts: m2Timeouts(cfg)}.Handler())
	// The appliance's server has 30 s and 60 s; one second here.
	srv.Config.ReadTimeout, srv.Config.WriteTimeout = time.Second, time.Second
	srv.Start()
	defer srv.Close()

	data := make([]byte, 256<<10)
	rand.Read(data)
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/m2/v1/images/slow", &slowBody{data: data, interval: 150 * time.Millisecond})
	req.ContentLength = int64(len(data))
	req.Header.Set("Authorization", "Bearer "+testToken)
	start := time.Now()
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("slow upload: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("slow upload (%s): status %d, want 201: %s", time.Since(start).Round(time.Millisecond), resp.StatusCode, body)
	}
	if took := time.Since(start); took < 2*time.Second {
		t.Fatalf("the upload took %s: not slower than the server's timeouts, so it proves nothing", took)
	}
}
