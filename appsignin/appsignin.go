// Package appsignin signs employees into the company's own applications
// with their passkeys, on the passkey sign-in core the portal uses
// (package signin): an OpenID Connect provider (github.com/zitadel/oidc/v3,
// mounted on the portal's router) and, for applications that do not speak
// OpenID Connect, a signed-assertion API (POST /api/v1/signin/begin and
// /finish, the script /sdk/passbridge.js) whose short-lived ES256 JWT the
// application's backend checks against passbridge's JWKS. The clients are
// oidc.clients; the signing keys are in the database
// (passbridge_signing_keys), so every replica signs with the same key.
package appsignin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/signin"
	"github.com/passbridge/passbridge/store"
)

// Audit events of the application sign-in.
const (
	// EvAppSignIn is a sign-in to an application: detail.client_id,
	// detail.protocol (oidc or assertion), detail.jti for an assertion.
	EvAppSignIn = "app.signin"
)

// Options are the application sign-in's dependencies.
type Options struct {
	DB   *store.DB
	Core *signin.Core
	Log  *slog.Logger
	// Portal checks directory passwords for the clients with
	// password_fallback (the portal's check and rate limits); nil only
	// when no client has it.
	Portal Portal
}

// Apps is the application sign-in of one configuration.
type Apps struct {
	cfg     *config.Config
	log     *slog.Logger
	core    *signin.Core
	db      *store.DB
	n       schema.Names
	keys    *Keys
	clients map[string]*config.Client
	issuer  string
	portal  Portal
	csrf    echo.MiddlewareFunc
	// provider is zitadel/oidc's OpenID Connect provider.
	provider http.Handler
}

// New builds the application sign-in; nil, nil when no client is
// configured (then nothing is mounted).
func New(cfg *config.Config, opts Options) (*Apps, error) {
	if len(cfg.OIDC.Clients) == 0 {
		return nil, nil
	}
	if opts.Core == nil || opts.DB == nil {
		return nil, fmt.Errorf("application sign-in: needs the portal's sign-in core and the database")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	var err error
	a := &Apps{cfg: cfg, log: opts.Log, core: opts.Core, db: opts.DB, n: schema.NamesFor(cfg), clients: map[string]*config.Client{}, portal: opts.Portal}
	for i := range cfg.OIDC.Clients {
		c := &cfg.OIDC.Clients[i]
		a.clients[c.ID] = c
		if c.PasswordFallback && opts.Portal == nil {
			return nil, fmt.Errorf("oidc.clients[%d].password_fallback: the password fallback needs the portal's password check", i)
		}
	}
	a.issuer = strings.TrimRight(cfg.OIDC.Issuer, "/")
	if a.issuer == "" {
		a.issuer = strings.TrimRight(cfg.Portal.PublicURL, "/")
	}
	if a.issuer == "" {
		a.issuer = strings.TrimRight(cfg.Portal.Origins[0], "/")
	}
	a.csrf = a.newCSRF()
	lifetime := max(cfg.OIDC.TokenLifetime.D(), cfg.OIDC.AssertionLifetime.D())
	a.keys = NewKeys(opts.DB, a.n, cfg.OIDC.KeyRotation.D(), lifetime, opts.Core.Now)
	if a.provider, err = a.newProvider(); err != nil {
		return nil, fmt.Errorf("OpenID Connect provider: %w", err)
	}
	return a, nil
}

// Issuer is the issuer of every token passbridge signs.
func (a *Apps) Issuer() string { return a.issuer }

// Keys is the signing key store.
func (a *Apps) Keys() *Keys { return a.keys }

// Mount adds the routes of the application sign-in to the portal's router:
// the OpenID Connect provider (its JWKS at /oidc/keys serves the assertion
// API too) and the assertion API.
func (a *Apps) Mount(e *echo.Echo) {
	a.mountAssertion(e)
	a.mountOIDC(e)
}

// jwksPath is where the public signing keys are published.
const jwksPath = "/oidc/keys"

// subject is what sub carries for a client: the users row's key (the
// application's own user ID) or the directory's stable ID.
func subject(c *config.Client, it *signin.Identity) string {
	if c.Subject == "directory_id" {
		return it.DirectoryID
	}
	return userKeyString(it.UserKey)
}

func userKeyString(k any) string {
	switch v := k.(type) {
	case int64:
		return strconv.FormatInt(v, 10)
	case string:
		return v
	case []byte:
		return string(v)
	}
	return fmt.Sprint(k)
}

// amr are the authentication methods of a passkey sign-in (RFC 8176):
// proof of possession of a key, user verification (PIN or biometric, so
// two factors), and whether the key is bound to hardware (hwk) or synced
// (swk).
func amr(cr *signin.Credential) []string {
	if cr.BackupEligible {
		return []string{"pop", "swk", "user", "mfa"}
	}
	return []string{"pop", "hwk", "user", "mfa"}
}

// claims are the identity claims of a signed-in user, for a client.
func claims(it *signin.Identity) map[string]any {
	m := map[string]any{
		"preferred_username": it.Username,
		"name":               it.Name(),
		"user_key":           userKeyString(it.UserKey),
		"directory_id":       it.DirectoryID,
	}
	if it.Email.Valid && it.Email.String != "" {
		m["email"] = it.Email.String
	}
	return m
}

// appError writes the JSON error of the application API: the status, a
// code and a message (the daemon's own handler only knows echo errors).
func appError(c echo.Context, err error) error {
	var ue *signin.Error
	if errors.As(err, &ue) {
		return c.JSON(ue.Status, map[string]any{"status": ue.Status, "code": ue.Code, "error": ue.Message})
	}
	return err
}

// Janitor deletes what expired (sweep), every interval until ctx ends.
// Every replica may run it: the deletes are idempotent.
func (a *Apps) Janitor(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := a.sweep(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("application sign-in cleanup failed; will retry", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sweep deletes the keys no longer published, the authorization requests
// past their life, and the access tokens a day after they expired.
func (a *Apps) sweep(ctx context.Context) error {
	if err := a.keys.Prune(ctx); err != nil {
		return err
	}
	now := a.core.Now()
	for _, st := range []struct {
		table  string
		before time.Time
	}{{"oidc_requests", now}, {"oidc_tokens", now.Add(-24 * time.Hour)}} {
		if _, err := store.Exec(ctx, a.db, "DELETE FROM "+a.n.Table(st.table)+" WHERE "+a.n.Column("expires_at")+" < ?", st.before); err != nil {
			return fmt.Errorf("clean up %s: %w", st.table, err)
		}
	}
	return nil
}

// audit records an event of the application sign-in, logging a failure to
// write it.
func (a *Apps) audit(ctx context.Context, e signin.Event) {
	if err := a.core.Record(ctx, a.db, e); err != nil {
		a.log.Error("cannot write the audit trail", "event", e.Event, "err", err)
	}
}
