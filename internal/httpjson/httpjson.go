// Package httpjson is the one shape of JSON over HTTP that passbridge's
// surfaces share (the portal's /webauthn/ API, the daemon's admin API): the
// strict request decoder and the error body. A handler returns an *Error to
// answer with a 4xx that says what was wrong; each surface's error handler
// writes it as a Body.
package httpjson

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Body is the JSON of every error passbridge answers:
// {"status":400,"code":"malformed","error":"..."}.
type Body struct {
	Status int    `json:"status"`
	Code   string `json:"code"`
	Error  string `json:"error"`
}

// Error is an error meant for the caller: its message is shown as it is,
// its code lets a script react.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

// Body is the error as answered.
func (e *Error) Body() Body { return Body{Status: e.Status, Code: e.Code, Error: e.Message} }

// CodeFor is the code of a status that has no more precise one: its
// status text in snake case ("bad_request", "not_found", "internal_server_error").
func CodeFor(status int) string {
	return strings.ToLower(strings.ReplaceAll(http.StatusText(status), " ", "_"))
}

// Codes of the decoder's errors.
const (
	CodeMalformed = "malformed" // not JSON, not the expected shape, not application/json
	CodeTooLarge  = "too_large" // over the size limit
)

// Decode reads r's JSON body into v strictly: no Content-Type or
// application/json, at most max bytes, no unknown field, one JSON value
// and nothing after it. An empty body leaves v as it is (the zero value:
// requests whose every field is optional). Its errors are *Error: 415,
// 413 or 400.
func Decode(w http.ResponseWriter, r *http.Request, max int64, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(strings.ToLower(ct), "application/json") {
		return &Error{Status: http.StatusUnsupportedMediaType, Code: CodeMalformed, Message: "Expected Content-Type: application/json."}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, max))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case errors.As(err, &mbe):
			return &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge, Message: fmt.Sprintf("The request is larger than %d bytes.", max)}
		}
		return &Error{Status: http.StatusBadRequest, Code: CodeMalformed, Message: "Malformed request: " + err.Error()}
	}
	if dec.More() {
		return &Error{Status: http.StatusBadRequest, Code: CodeMalformed, Message: "Malformed request: more than one JSON value."}
	}
	return nil
}
