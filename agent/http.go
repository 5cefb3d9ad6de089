package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/passbridge/passbridge/agent/metrics"
	"github.com/passbridge/passbridge/internal/httpjson"
	"github.com/passbridge/passbridge/internal/redact"
)

// APIError is the body of every error the daemon's JSON endpoints return:
// the one error shape of passbridge's JSON surfaces (internal/httpjson).
type APIError = httpjson.Body

// newEcho builds one router with the shared error handler and middleware:
// panics become 500s, every request is measured by route pattern.
func newEcho(log *slog.Logger, m *metrics.Metrics, fallback func() echo.HTTPErrorHandler) *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = errorHandler(log, fallback)
	// The client is the TCP peer: X-Forwarded-For and X-Real-IP are
	// believed only from portal.trusted_proxies, which the portal sets on
	// its own listener. (Echo's default would believe any client's header,
	// and the per-address limits with it.)
	e.IPExtractor = echo.ExtractIPDirect()
	e.Use(measure(m), recoverPanics(log))
	return e
}

// isJSONPath reports whether errors on path are for machines (JSON) rather
// than for people in a browser (the portal's own error pages).
func isJSONPath(path string) bool {
	return strings.HasPrefix(path, "/api/") || path == "/healthz" || path == "/readyz" || path == "/metrics"
}

// errorHandler is the one HTTP error handler of the daemon: JSON errors with
// the status the handler meant, 4xx for anything the client got wrong, and a
// 500 only for real faults (logged, never described to the client). Paths
// outside the daemon's own endpoints go to the portal's handler when one is
// installed, so employees see an HTML page.
func errorHandler(log *slog.Logger, fallback func() echo.HTTPErrorHandler) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		if fallback != nil && !isJSONPath(c.Request().URL.Path) {
			if h := fallback(); h != nil {
				h(err, c)
				return
			}
		}
		status, code, msg := classify(err)
		if status >= 500 {
			log.Error("request failed", "method", c.Request().Method, "path", redact.Secrets(c.Request().URL.Path), "err", redact.Secrets(err.Error()))
		}
		if status == http.StatusUnauthorized {
			c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="passbridge-admin"`)
		}
		var werr error
		if c.Request().Method == http.MethodHead {
			werr = c.NoContent(status)
		} else {
			werr = c.JSON(status, APIError{Status: status, Code: code, Error: msg})
		}
		if werr != nil {
			log.Debug("cannot write error response", "err", werr)
		}
	}
}

// classify maps an error to a status, a code and a message safe to show.
func classify(err error) (int, string, string) {
	var je *httpjson.Error
	if errors.As(err, &je) {
		return je.Status, je.Code, je.Message
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		msg := http.StatusText(he.Code)
		switch m := he.Message.(type) {
		case string:
			msg = m
		case error:
			msg = m.Error()
		}
		if he.Code >= 500 && he.Internal != nil {
			// Internal detail stays in the log.
			msg = http.StatusText(he.Code)
		}
		return he.Code, httpjson.CodeFor(he.Code), msg
	}
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se), errors.As(err, &te), errors.Is(err, io.ErrUnexpectedEOF):
		return http.StatusBadRequest, httpjson.CodeMalformed, "malformed JSON: " + err.Error()
	}
	return http.StatusInternalServerError, "internal", "internal error"
}

// badRequest is a 400 with a message for the client.
func badRequest(format string, args ...any) error {
	return echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf(format, args...))
}

// recoverPanics turns a panic in a handler into a 500 through the error
// handler, so one bad request can never take the daemon down.
func recoverPanics(log *slog.Logger) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) (err error) {
			defer func() {
				if r := recover(); r != nil {
					if r == http.ErrAbortHandler {
						panic(r)
					}
					log.Error("handler panicked", "method", c.Request().Method, "path", redact.Secrets(c.Request().URL.Path), "panic", redact.Secrets(fmt.Sprint(r)))
					err = echo.NewHTTPError(http.StatusInternalServerError).SetInternal(fmt.Errorf("panic: %v", r))
				}
			}()
			return next(c)
		}
	}
}

// measure records request durations by route pattern and status code.
func measure(m *metrics.Metrics) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			err := next(c)
			if err != nil {
				// Let the error handler write the response now, so the
				// status it picks is the one recorded.
				c.Error(err)
			}
			route := c.Path()
			if route == "" || c.Response().Status == http.StatusNotFound && strings.HasSuffix(route, "*") {
				route = "unmatched"
			}
			m.HTTPRequest(c.Request().Method, route, c.Response().Status, time.Since(start))
			return nil
		}
	}
}
