package httpx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// MaxAnswer bounds a JSON answer a Caller reads.
const MaxAnswer = 64 << 20

// Caller makes JSON calls to one of the appliance's HTTP APIs with a
// bearer token. It holds no policy; it is safe for concurrent use.
type Caller struct {
	// Base is the API's root URL, without a trailing slash.
	Base string
	// Token is sent as a bearer token when not empty.
	Token string
	// HTTP sends the requests; http.DefaultClient when nil.
	HTTP *http.Client
}

// StatusError is an API's error answer: its status, its "error" message
// and the raw body, from which each API's client reads its own fields.
type StatusError struct {
	Status  int
	Message string
	Body    []byte
}

// Error returns the API's message and the HTTP status.
func (e *StatusError) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status) }

// StatusOf returns the status of an API's error answer in err's chain, or 0.
func StatusOf(err error) int {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status
	}
	return 0
}

// PathEscape escapes each part and joins them with slashes.
func PathEscape(parts ...string) string {
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = url.PathEscape(p)
	}
	return strings.Join(out, "/")
}

// Do sends in (if not nil) as JSON and decodes a JSON answer into out (if
// not nil).
func (c *Caller) Do(ctx context.Context, method, path string, in, out any) error {
	_, err := c.DoStatus(ctx, method, path, in, out)
	return err
}

// DoStatus is Do that also returns the status of a successful answer.
func (c *Caller) DoStatus(ctx context.Context, method, path string, in, out any) (int, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, fmt.Errorf("%s %s: encode request: %w", method, RedactPath(path), err)
		}
		body = bytes.NewReader(b)
	}
	req, err := c.NewRequest(ctx, method, path, body)
	if err != nil {
		return 0, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.Send(req, out)
}

// Stream sends r (size bytes, -1 when unknown) as the raw body of a
// request and decodes a JSON answer into out.
func (c *Caller) Stream(ctx context.Context, method, path string, r io.Reader, size int64, out any) error {
	req, err := c.NewRequest(ctx, method, path, r)
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	_, err = c.Send(req, out)
	return err
}

// Text fetches a non-JSON answer (a boot script), at most limit bytes.
func (c *Caller) Text(ctx context.Context, path string, limit int64) ([]byte, error) {
	req, err := c.NewRequest(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.roundTrip(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read answer: %w", req.Method, RedactPath(req.URL.Path), err)
	}
	if resp.StatusCode >= 300 {
		return nil, answerError(resp.StatusCode, b)
	}
	return b, nil
}

// NewRequest returns a request for path under Base.
func (c *Caller) NewRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, RedactPath(path), err)
	}
	return req, nil
}

// Send authenticates and sends req, decodes a JSON answer into out and
// returns the status; an error answer is a *StatusError.
func (c *Caller) Send(req *http.Request, out any) (int, error) {
	req.Header.Set("Accept", "application/json")
	resp, err := c.roundTrip(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxAnswer))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: read answer: %w", req.Method, RedactPath(req.URL.Path), err)
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, answerError(resp.StatusCode, b)
	}
	if out != nil && resp.StatusCode != http.StatusNoContent && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: decode answer: %w", req.Method, RedactPath(req.URL.Path), err)
		}
	}
	return resp.StatusCode, nil
}

func (c *Caller) roundTrip(req *http.Request) (*http.Response, error) {
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		// The URL may hold a boot token: name the route, not the URL.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%s %s: %w", req.Method, RedactPath(req.URL.Path), err)
	}
	return resp, nil
}

// answerError turns an error answer into a *StatusError.
func answerError(status int, b []byte) error {
	var e struct {
		Error string `json:"error"`
	}
	msg := ""
	if json.Unmarshal(b, &e) == nil {
		msg = e.Error
	}
	if msg == "" {
		msg = strings.TrimSpace(string(b))
		if msg == "" || len(msg) > 200 {
			msg = http.StatusText(status)
		}
	}
	return &StatusError{Status: status, Message: msg, Body: b}
}
