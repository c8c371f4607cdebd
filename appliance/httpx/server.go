// Package httpx is the one HTTP toolkit every listener and client of the
// appliance uses: errors that carry their answer, JSON answers, strict
// bounded JSON decoding, a status recorder, request logging and security
// headers on the server side; one JSON caller with typed error answers on
// the client side. The same mistake gets the same status on every API.
package httpx

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
)

// DefaultBodyLimit bounds a JSON request body unless a route says otherwise.
const DefaultBodyLimit = 1 << 20

// Error is an error with the HTTP status and message it answers with.
// Extra fields join the message in the JSON body. Cause, if any, is for
// logs and audit entries only: the body carries Message.
type Error struct {
	Status  int
	Message string
	Extra   map[string]any
	Cause   error
}

// Error returns the message and, after it, the cause.
func (e *Error) Error() string {
	if e.Cause != nil {
		return e.Message + ": " + e.Cause.Error()
	}
	return e.Message
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Cause }

// Errorf returns an *Error answering status with a formatted message.
func Errorf(status int, format string, args ...any) *Error {
	return &Error{Status: status, Message: fmt.Sprintf(format, args...)}
}

// BadRequest returns a 400 *Error with a formatted message.
func BadRequest(format string, args ...any) *Error {
	return Errorf(http.StatusBadRequest, format, args...)
}

// Classify maps an API's domain errors to their answers; nil means the
// error is not one it knows, which answers 500.
type Classify func(err error) *Error

// Responder turns handler errors into answers: the one place per API where
// that happens and where unexpected failures are logged.
type Responder struct {
	// Log receives failures (error) and refusals (debug).
	Log *slog.Logger
	// Classify maps domain errors; *Error values need no mapping.
	Classify Classify
}

// Resolve returns the answer err gets: an *Error in its chain as it is,
// then what Classify says, else a 500 whose message reveals nothing.
func (rs Responder) Resolve(err error) *Error {
	var he *Error
	if errors.As(err, &he) {
		return he
	}
	if rs.Classify != nil {
		if he := rs.Classify(err); he != nil {
			if he.Cause == nil {
				he.Cause = err
			}
			return he
		}
	}
	return &Error{Status: http.StatusInternalServerError, Message: "internal error; see the appliance log", Cause: err}
}

// Answer writes err's answer and returns its status.
func (rs Responder) Answer(w http.ResponseWriter, r *http.Request, err error) int {
	he := rs.Resolve(err)
	log := rs.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if he.Status >= 500 {
		log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", RedactPath(r.URL.Path), "status", he.Status, "err", err)
	} else {
		log.DebugContext(r.Context(), "request refused", "method", r.Method, "path", RedactPath(r.URL.Path), "status", he.Status, "err", err)
	}
	WriteError(w, he)
	return he.Status
}

// Handle adapts a handler that returns an error.
func (rs Responder) Handle(h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			rs.Answer(w, r, err)
		}
	})
}

// NotFound answers a path no route matches.
func (rs Responder) NotFound() http.Handler {
	return rs.Handle(func(http.ResponseWriter, *http.Request) error {
		return Errorf(http.StatusNotFound, "no such route")
	})
}

// MethodNotAllowed answers a route asked with a method it does not serve.
func (rs Responder) MethodNotAllowed() http.Handler {
	return rs.Handle(func(http.ResponseWriter, *http.Request) error {
		return Errorf(http.StatusMethodNotAllowed, "method not allowed on this route")
	})
}

// WriteError writes e as {"error": message, extra...}.
func WriteError(w http.ResponseWriter, e *Error) {
	body := make(map[string]any, len(e.Extra)+1)
	for k, v := range e.Extra {
		body[k] = v
	}
	body["error"] = e.Message
	WriteJSON(w, e.Status, body)
}

// WriteJSON writes v as an indented JSON answer that no cache keeps.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client may have gone; nothing left to tell it
}

// DecodeJSON strictly decodes one JSON object from r's body into dst:
// a JSON content type or none (415 otherwise), at most limit bytes (413;
// DefaultBodyLimit when limit <= 0), no unknown fields and nothing after
// the object (400).
func DecodeJSON(w http.ResponseWriter, r *http.Request, dst any, limit int64) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return Errorf(http.StatusUnsupportedMediaType, "body must be application/json")
		}
	}
	if limit <= 0 {
		limit = DefaultBodyLimit
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var mbe *http.MaxBytesError
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &mbe):
			return Errorf(http.StatusRequestEntityTooLarge, "body is larger than %d bytes", mbe.Limit)
		case errors.Is(err, io.EOF):
			return BadRequest("body: a JSON object is required")
		case errors.As(err, &se):
			return BadRequest("body: malformed JSON at byte %d", se.Offset)
		case errors.As(err, &te):
			e := BadRequest("%s: must be a JSON %s", te.Field, te.Type)
			e.Extra = map[string]any{"fields": []string{te.Field}}
			return e
		}
		return BadRequest("body: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return BadRequest("body: unexpected data after the JSON object")
	}
	return nil
}
