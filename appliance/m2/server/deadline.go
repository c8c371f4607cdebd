package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// Timeouts bound the routes that move volumes' data: image import and
// upload, create_disk and snapshots. They replace, for those routes, the
// HTTP server's general read and write timeouts, which are sized for
// small requests.
type Timeouts struct {
	// Transfer bounds reading an uploaded image's body; past it the
	// answer is 408.
	Transfer time.Duration
	// Operation bounds such a request from start to finish; past it the
	// answer is 504 and nothing is kept.
	Operation time.Duration
}

// DefaultTimeout is each of Timeouts' when unset: an hour, a 100 GiB
// image at 30 MB/s.
const DefaultTimeout = time.Hour

func (t Timeouts) orDefaults() Timeouts {
	if t.Transfer <= 0 {
		t.Transfer = DefaultTimeout
	}
	if t.Operation <= 0 {
		t.Operation = DefaultTimeout
	}
	return t
}

// longKind marks a route whose work outlasts the server's timeouts.
type longKind int

const (
	longWork   longKind = iota + 1 // copies volumes
	longUpload                     // also streams the request body
)

// answerGrace is how long after the operation deadline the connection
// stays open, to write the 504.
const answerGrace = 10 * time.Second

var errTransferTimeout = errors.New("upload too slow")

// deadlines gives a long request its own deadlines: the operation's on
// its context, and on the connection a read and write deadline past it.
// The read deadline matters after the body too: it also ends the server's
// watch for a client hang-up, which would cancel the request. An upload's
// body additionally has to arrive within Transfer. done releases them.
func (h *handler) deadlines(w http.ResponseWriter, r *http.Request, upload bool) (*http.Request, func()) {
	rc := http.NewResponseController(w)
	end := time.Now().Add(h.Timeouts.Operation)
	if err := errors.Join(rc.SetReadDeadline(end.Add(answerGrace)), rc.SetWriteDeadline(end.Add(answerGrace))); err != nil {
		h.Logger.Debug("connection deadlines not settable; the server's timeouts apply", "err", err)
	}
	ctx, cancel := context.WithDeadline(r.Context(), end)
	r = r.WithContext(ctx)
	if !upload {
		return r, cancel
	}
	b := &deadlineBody{ReadCloser: r.Body, rc: rc, limit: h.Timeouts.Transfer}
	b.timer = time.AfterFunc(b.limit, b.expire)
	r.Body = b
	return r, func() { b.timer.Stop(); cancel() }
}

// deadlineBody is a request body that must be read to its end within
// limit: when the timer fires first, the pending read is cut off and
// reads fail with errTransferTimeout.
type deadlineBody struct {
	io.ReadCloser
	rc    *http.ResponseController
	limit time.Duration
	timer *time.Timer

	mu            sync.Mutex
	done, expired bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == nil {
		return n, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.expired {
		return n, fmt.Errorf("%w: the body did not arrive within %s", errTransferTimeout, b.limit)
	}
	if errors.Is(err, io.EOF) {
		b.done = true
		b.timer.Stop()
	}
	return n, err
}

func (b *deadlineBody) expire() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	b.expired = true
	b.rc.SetReadDeadline(time.Now()) // unblocks the read in progress
}
