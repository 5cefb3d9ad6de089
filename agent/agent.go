// Package agent is the passbridge daemon: it serves the HTTP surfaces
// (portal, health, metrics, admin API) and runs the sync schedules. One
// process or many: replicas are stateless and share the database.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/passbridge/passbridge/config"
)

// Agent is one running passbridge daemon.
type Agent struct {
	cfg *config.Config
	log *slog.Logger

	web *echo.Echo
}

// New builds the daemon from its configuration and dependencies.
func New(cfg *config.Config, log *slog.Logger) *Agent {
	a := &Agent{cfg: cfg, log: log}
	a.web = newEcho()
	a.web.GET("/healthz", a.healthz)
	return a
}

// Handler is the portal listener's HTTP handler (tests serve it directly).
func (a *Agent) Handler() http.Handler { return a.web }

func newEcho() *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	return e
}

// healthz answers as long as the process is alive and serving.
func (a *Agent) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// Run serves until ctx is cancelled, then shuts down gracefully within the
// configured grace time. ready, if not nil, receives the bound address once
// the listener is open.
func (a *Agent) Run(ctx context.Context, ready func(addr net.Addr)) error {
	ln, err := net.Listen("tcp", a.cfg.Portal.Listen)
	if err != nil {
		return fmt.Errorf("portal listen %s: %w", a.cfg.Portal.Listen, err)
	}
	srv := newServer(a.web)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	a.log.Info("portal listening", "addr", ln.Addr().String())
	if ready != nil {
		ready(ln.Addr())
	}

	select {
	case err := <-errc:
		return fmt.Errorf("portal: %w", err)
	case <-ctx.Done():
	}
	a.log.Info("shutting down", "grace", a.cfg.Admin.ShutdownGrace.String())
	sctx, cancel := context.WithTimeout(context.Background(), a.cfg.Admin.ShutdownGrace.D())
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("portal shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("portal: %w", err)
	}
	a.log.Info("stopped")
	return nil
}

// newServer sets the timeouts every listener needs so that a slow or idle
// client cannot hold connections open forever.
func newServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
}
