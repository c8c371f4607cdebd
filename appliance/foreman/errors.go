package foreman

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/malleable-cloud/malleable/appliance/httpx"
)

// Sentinels callers branch on; an *APIError matches them with errors.Is.
var (
	// ErrNotFound is a 404, or a lookup by name that found nothing.
	ErrNotFound = errors.New("foreman: not found")
	// ErrUnauthorized is a 401: the login was refused.
	ErrUnauthorized = errors.New("foreman: login refused")
	// ErrForbidden is a 403: the user lacks a permission.
	ErrForbidden = errors.New("foreman: access denied")
	// ErrInvalid is a 422: Foreman refused the record (Messages say why).
	ErrInvalid = errors.New("foreman: record refused")
)

// APIError is an error answer of Foreman's API.
type APIError struct {
	// Method and Path name the call.
	Method, Path string
	// Status is the HTTP status.
	Status int
	// Messages are Foreman's own words: a 422's full_messages verbatim,
	// else the error's message (and details).
	Messages []string
	// Body is the raw answer.
	Body []byte
}

// Error names the call, the status and Foreman's messages.
func (e *APIError) Error() string {
	msg := strings.Join(e.Messages, "; ")
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	return fmt.Sprintf("foreman %s %s: %d: %s", e.Method, e.Path, e.Status, msg)
}

// Is matches the sentinel of the error's status.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrForbidden:
		return e.Status == http.StatusForbidden
	case ErrInvalid:
		return e.Status == http.StatusUnprocessableEntity
	}
	return false
}

// apiError turns an httpx error answer into an *APIError; transport
// errors pass through wrapped.
func apiError(method, path string, err error) error {
	var se *httpx.StatusError
	if !errors.As(err, &se) {
		return fmt.Errorf("foreman %s %s: %w", method, path, err)
	}
	e := &APIError{Method: method, Path: path, Status: se.Status, Body: se.Body}
	// {"error":{"id","errors","full_messages"}} (422),
	// {"error":{"message","details"}} (401, 403, 404, 500),
	// {"status":400,"error":"..."} (bad JSON).
	var wrapped struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(se.Body, &wrapped) == nil && len(wrapped.Error) > 0 {
		var obj struct {
			FullMessages []string `json:"full_messages"`
			Message      string   `json:"message"`
			Details      string   `json:"details"`
		}
		var s string
		switch {
		case json.Unmarshal(wrapped.Error, &obj) == nil:
			e.Messages = obj.FullMessages
			if len(e.Messages) == 0 && obj.Message != "" {
				e.Messages = []string{obj.Message}
				if obj.Details != "" {
					e.Messages = append(e.Messages, obj.Details)
				}
			}
		case json.Unmarshal(wrapped.Error, &s) == nil && s != "":
			e.Messages = []string{s}
		}
	}
	if len(e.Messages) == 0 {
		if b := bytes.TrimSpace(se.Body); len(b) > 0 && len(b) <= 500 && !bytes.HasPrefix(b, []byte("<")) {
			e.Messages = []string{string(b)}
		}
	}
	return e
}
