package hil

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/malleable-cloud/malleable/appliance/allocator/node"
)

// apiError is a non-2xx answer from HIL, or from OBMd behind a redirect.
// It unwraps to one of the package's sentinels.
type apiError struct {
	method, path string // the HIL call; path is escaped and never has a query
	obmdPath     string // set when OBMd answered (its token is left out)
	status       int
	typ, msg     string // HIL's error class and message, when it sent JSON
	kind         error
}

func (e *apiError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: ", e.method, e.path)
	if e.obmdPath != "" {
		fmt.Fprintf(&b, "OBMd %s: ", e.obmdPath)
	}
	fmt.Fprintf(&b, "%d", e.status)
	switch {
	case e.typ != "":
		fmt.Fprintf(&b, " %s %q", e.typ, e.msg)
	case e.msg != "":
		fmt.Fprintf(&b, " %q", e.msg)
	default:
		fmt.Fprintf(&b, " %s", http.StatusText(e.status))
	}
	fmt.Fprintf(&b, ": %v", e.kind)
	return b.String()
}

func (e *apiError) Unwrap() error { return e.kind }

// asAPIError reports the HIL or OBMd answer behind err, if there is one.
func asAPIError(err error) (*apiError, bool) {
	var e *apiError
	ok := errors.As(err, &e)
	return e, ok
}

// newAPIError parses an error answer. HIL sends {"type", "msg"}; OBMd sends
// bare statuses; proxies and crashing HIL send HTML. Whatever the body,
// the status decides the sentinel.
func (c *Client) newAPIError(method, path string, resp *http.Response, body []byte) *apiError {
	e := &apiError{method: method, path: path, status: resp.StatusCode}
	var hilErr struct {
		Type string `json:"type"`
		Msg  string `json:"msg"`
	}
	if json.Unmarshal(body, &hilErr) == nil && hilErr.Type != "" {
		e.typ, e.msg = hilErr.Type, truncate(hilErr.Msg)
	} else if t := strings.TrimSpace(string(body)); t != "" && utf8.ValidString(t) {
		if strings.HasPrefix(t, "<") {
			t = htmlMessage(t)
		}
		e.msg = truncate(t)
	}
	if resp.Request.Response != nil { // reached after a redirect: OBMd
		e.obmdPath = resp.Request.URL.EscapedPath()
		e.kind = obmdKind(resp.StatusCode)
		return e
	}
	e.kind = c.hilKind(e.status, e.typ, e.msg)
	return e
}

// htmlMessage returns the text of the last <p> of an HTML error page: what
// HIL's server says on a 500 ("Failed to get a token for node"), or "".
func htmlMessage(page string) string {
	i := strings.LastIndex(page, "<p>")
	if i < 0 {
		return ""
	}
	t := page[i+len("<p>"):]
	if j := strings.Index(t, "</p>"); j >= 0 {
		t = t[:j]
	}
	var b strings.Builder
	inTag := false
	for _, r := range t {
		switch {
		case r == '<':
			inTag = true
		case r == '>':
			inTag = false
		case !inTag:
			b.WriteRune(r)
		}
	}
	return strings.Join(strings.Fields(html.UnescapeString(b.String())), " ")
}

func truncate(s string) string {
	const n = 300
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// hilKind maps a HIL error answer to a sentinel.
func (c *Client) hilKind(status int, typ, msg string) error {
	switch status {
	case http.StatusBadRequest:
		return node.ErrBadArgument
	case http.StatusUnauthorized, http.StatusForbidden: // HIL never sends 403; a proxy might
		return ErrUnauthorized
	case http.StatusNotFound:
		// HIL's database auth looks the user up with get-or-404, so an
		// unknown user is a 404 that says nothing about nodes.
		if typ == "NotFoundError" && c.user != "" && msg == "User "+c.user+" does not exist." {
			return ErrUnauthorized
		}
		return node.ErrNotFound
	case http.StatusConflict:
		switch {
		case typ == "ProjectMismatchError" || (typ == "BlockedError" && strings.Contains(msg, "already owned")):
			return node.ErrOwned
		case typ == "BlockedError" && (strings.Contains(msg, "networking operation is already active") ||
			strings.Contains(msg, "pending network actions")):
			return node.ErrPending
		}
		return node.ErrBlocked
	}
	return node.ErrBackend
}

// obmdKind maps an OBMd status: 401 is a dead or missing token, 400 a bad
// body or boot device, 404 a node HIL knows and OBMd does not (a
// misconfiguration, not a missing node).
func obmdKind(status int) error {
	switch status {
	case http.StatusBadRequest:
		return node.ErrBadArgument
	case http.StatusUnauthorized:
		return ErrUnauthorized
	}
	return node.ErrBackend
}

// transportError reports a failed exchange without the *url.Error around
// it: that one quotes the last URL, which after a redirect holds the
// node's OBMd token. The caller's own cancellation is not a failure of
// HIL; the per-call timeout and network errors are node.ErrUnavailable (and
// node.ErrBackend).
func transportError(parent context.Context, method, path string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if parent.Err() != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	return fmt.Errorf("%s %s: %w (%w): %w", method, path, node.ErrUnavailable, node.ErrBackend, err)
}
