// Package admintoken checks the admin token, which opens the admin API
// (/api/v1) and the IT console (its token sign-in, and Bearer on GET
// /admin/...). The daemon holds the one Guard of a process, reading the
// token of its current configuration: a reload (SIGHUP) that brings a new
// admin.token applies to the API and the console at once, and the console
// binds the sessions it opens with the token to the token's ID, so that a
// rotation ends them. Wrong tokens are counted per client address
// (ratelimit.Address: IPv6 by /64), wherever they are tried, and audited.
package admintoken

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/passbridge/passbridge/audit"
	"github.com/passbridge/passbridge/ratelimit"
)

// Attempt is one presentation of the admin token.
type Attempt struct {
	Token string
	// Addr is the client's address as the listener sees it (through
	// portal.trusted_proxies on the portal listener; the TCP peer on the
	// admin listener).
	Addr      string
	UserAgent string
	// Where names what the token was presented to, for the audit trail:
	// /api/v1, /signin/admin-token, /admin.
	Where string
}

// Errors of Check.
var (
	// ErrOff: no admin.token is configured.
	ErrOff = errors.New("no admin token is configured: set admin.token or admin.token_file (or PASSBRIDGE_ADMIN_TOKEN)")
	// ErrWrong: the token presented is not the admin token.
	ErrWrong = errors.New("wrong admin token")
)

// LimitedError: too many wrong tokens came from the client's address;
// every attempt from there waits Retry.
type LimitedError struct {
	Limit  int
	Window time.Duration
	Retry  time.Duration
}

func (e *LimitedError) Error() string {
	return fmt.Sprintf("too many wrong admin tokens from this address (%d in %s): try again in %s", e.Limit, e.Window, e.Retry.Round(time.Second))
}

// EventRefused is the audit event of a refused admin token (success
// false; detail.where, detail.reason wrong or limited).
const EventRefused = "admin.token_refused"

// Settings are what a check reads of the current configuration.
type Settings struct {
	Token string // admin.token; "" turns the token off
	// Limit wrong tokens per address in Window
	// (portal.rate_limits.password_per_user per password_window).
	Limit  int
	Window time.Duration
}

// Guard checks admin tokens.
type Guard struct {
	settings func() Settings
	limits   *ratelimit.Limiter
	audit    func(context.Context, audit.Event) error
	log      *slog.Logger
}

// New returns a guard that reads its settings at every check (so a reload
// takes effect at once), counts wrong tokens in limits and audits through
// record.
func New(settings func() Settings, limits *ratelimit.Limiter, record func(context.Context, audit.Event) error, log *slog.Logger) *Guard {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Guard{settings: settings, limits: limits, audit: record, log: log}
}

func key(addr string) string { return "token:" + ratelimit.Address(addr) }

// Check checks a presented admin token against the current one in
// constant time, within the per-address limit of wrong tokens: a limited
// address is refused whatever it presents, so the limit is no oracle. It
// returns the token's ID on success. Wrong and limited attempts are
// audited; only wrong ones are counted, so any number of scripts with the
// right token never limit each other.
func (g *Guard) Check(ctx context.Context, at Attempt) (string, error) {
	s := g.settings()
	if s.Token == "" {
		return "", ErrOff
	}
	refuse := func(reason string, err error) (string, error) {
		e := audit.Event{Event: EventRefused, Actor: "admin-token", Target: "admin-token", IP: at.Addr, UserAgent: at.UserAgent,
			Detail: audit.Detail(map[string]any{"where": at.Where, "reason": reason})}
		if aerr := g.audit(ctx, e); aerr != nil {
			g.log.Error("cannot write the audit trail", "event", e.Event, "err", aerr)
		}
		return "", err
	}
	over, err := g.limits.Exceeded(ctx, key(at.Addr), s.Limit, s.Window)
	if err != nil {
		return "", err
	}
	if over {
		return refuse("limited", &LimitedError{Limit: s.Limit, Window: s.Window, Retry: s.Window})
	}
	got, want := sha256.Sum256([]byte(at.Token)), sha256.Sum256([]byte(s.Token))
	if at.Token == "" || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		if _, err := g.limits.Hit(ctx, key(at.Addr), s.Limit, s.Window); err != nil {
			g.log.Error("cannot count a wrong admin token", "err", err)
		}
		g.log.Warn("wrong admin token", "where", at.Where, "remote", at.Addr)
		return refuse("wrong", ErrWrong)
	}
	return id(s.Token), nil
}

// ID is the current token's fingerprint ("" without a token): the console
// stores it in the sessions the token opens, and a session whose ID is no
// longer current has ended. It is not the token's plain SHA-256, so it
// cannot be matched against a hash of the token kept elsewhere.
func (g *Guard) ID() string {
	if tok := g.settings().Token; tok != "" {
		return id(tok)
	}
	return ""
}

func id(tok string) string {
	h := sha256.Sum256([]byte("passbridge admin token session\x00" + tok))
	return hex.EncodeToString(h[:16])
}
