package signin

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/passbridge/passbridge/store"
)

// A WebAuthn ceremony spans two requests (begin, finish), which may reach
// two replicas. Its go-webauthn SessionData is stored whole, as JSON, in
// passbridge_ceremonies, under the SHA-256 of a random ceremony ID that the
// browser gets with the options and sends back with the response. The row
// is claimed once (finished_at set in one conditional UPDATE, which only one
// transaction on any replica can make change the row), so a response can
// never be replayed, and it is kept with its result for the adoption
// figures (time to enroll, abandonment).

// Ceremony kinds.
const (
	KindRegistration = "registration"
	KindLogin        = "login"     // the portal's passkey sign-in
	KindAppLogin     = "app_login" // an application's (OIDC or assertion API)
	// KindAppRegistration is a first passkey added on the invitation that
	// follows a password sign-in to an application: its own kind, counted
	// as its own registration method in the adoption figures.
	KindAppRegistration = "app_registration"
)

// Ceremony results.
const (
	ResultSucceeded = "succeeded"
	ResultFailed    = "failed"
	ResultRefused   = "refused" // the policy or the account state said no
	ResultCancelled = "cancelled"
	resultClaimed   = "claimed" // finish under way
)

// Ceremony is a stored ceremony: what begin stored.
type Ceremony struct {
	hash       string
	Kind       string
	IdentityID sql.NullInt64
	Session    webauthn.SessionData
	CreatedAt  time.Time
	claimed    bool
	// sealed: the ceremony came back sealed (seal.go), it has no row until
	// it is claimed; expires is its end.
	sealed  bool
	expires time.Time
}

// ErrCeremonyGone is what the browser hears about a ceremony that is
// unknown, expired, of another kind or already finished.
var ErrCeremonyGone = &Error{Status: http.StatusBadRequest, Code: "ceremony_expired",
	Message: "This request has expired or was already used. Please try again."}

// BeginCeremony stores a ceremony and returns the ID the browser keeps.
func (c *Core) BeginCeremony(ctx context.Context, kind string, identityID *int64, sd *webauthn.SessionData) (string, error) {
	raw, err := json.Marshal(sd)
	if err != nil {
		return "", fmt.Errorf("encode ceremony: %w", err)
	}
	secret, hash := NewSecret()
	now := c.now()
	var ident any
	if identityID != nil {
		ident = *identityID
	}
	// Shared with other requests' sign-in writes on SQLite (group commit).
	err = c.db.ExecShared(ctx, "INSERT INTO "+c.n.Ceremonies+" ("+c.Cols("", "id", "kind", "identity_id", "session_data", "created_at", "expires_at")+") VALUES (?, ?, ?, ?, ?, ?)",
		hash, kind, ident, string(raw), now, now.Add(c.cfg.Portal.CeremonyTimeout.D()))
	if err != nil {
		return "", fmt.Errorf("store ceremony: %w", err)
	}
	return secret, nil
}

// open is the WHERE of a ceremony that may still be finished.
func (c *Core) open() string {
	return c.q("id") + " = ? AND " + c.q("kind") + " = ? AND " + c.q("finished_at") + " IS NULL AND " + c.q("expires_at") + " > ?"
}

// peekCeremony reads a ceremony that may still be finished, without
// claiming it: the claim is made in the transaction that records the
// ceremony's outcome (claimIn).
func (c *Core) peekCeremony(ctx context.Context, id, kind string) (*Ceremony, error) {
	if strings.HasPrefix(id, sealPrefix) {
		return c.openCeremony(ctx, id, kind)
	}
	if !ValidSecret(id) {
		return nil, ErrCeremonyGone
	}
	hash := HashSecret(id)
	var row struct {
		Kind       string        `db:"kind"`
		IdentityID sql.NullInt64 `db:"identity_id"`
		Data       string        `db:"session_data"`
		CreatedAt  time.Time     `db:"created_at"`
	}
	// On the reader pool (SQLite): begin committed the row.
	err := store.Get(ctx, c.db.Reader(), &row, "SELECT "+c.Cols("", "kind", "identity_id", "session_data", "created_at")+" FROM "+c.n.Ceremonies+" WHERE "+c.open(), hash, kind, c.now())
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrCeremonyGone
	}
	if err != nil {
		return nil, fmt.Errorf("read ceremony: %w", err)
	}
	cer := &Ceremony{hash: hash, Kind: row.Kind, IdentityID: row.IdentityID, CreatedAt: row.CreatedAt}
	if err := json.Unmarshal([]byte(row.Data), &cer.Session); err != nil {
		return nil, fmt.Errorf("ceremony session data: %w", err)
	}
	return cer, nil
}

// claimIn claims an open ceremony through q with its final result: exactly
// one caller, on any replica, changes the row; every other one gets
// ErrCeremonyGone (and, in a transaction, rolls back what it wrote).
func (c *Core) claimIn(ctx context.Context, q store.Execer, cer *Ceremony, result string) error {
	if cer.sealed {
		return c.claimSealed(ctx, q, cer, result)
	}
	now := c.now()
	res, err := store.Exec(ctx, q, "UPDATE "+c.n.Ceremonies+" SET "+c.q("finished_at")+" = ?, "+c.q("result")+" = ? WHERE "+c.open(),
		now, result, cer.hash, cer.Kind, now)
	if err != nil {
		return fmt.Errorf("claim ceremony: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return ErrCeremonyGone // another request claimed it first, or it expired
	}
	cer.claimed = true
	return nil
}

// ClaimCeremony takes a ceremony for finishing: it must exist, be of kind,
// not be expired, and not be claimed before. Exactly one caller, on any
// replica, wins the claim. (Registrations claim first and record their
// result after; sign-ins claim in the transaction of their outcome.)
func (c *Core) ClaimCeremony(ctx context.Context, id, kind string) (*Ceremony, error) {
	cer, err := c.peekCeremony(ctx, id, kind)
	if err != nil {
		return nil, err
	}
	if err := c.claimIn(ctx, c.db, cer, resultClaimed); err != nil {
		return nil, err
	}
	return cer, nil
}

// settle claims an open ceremony with its final result and counts it; it
// is ErrCeremonyGone when another request finished it first (then that
// request's outcome is the ceremony's, and this one records nothing).
func (c *Core) settle(ctx context.Context, cer *Ceremony, result string) error {
	if err := c.claimIn(ctx, c.db, cer, result); err != nil {
		return err
	}
	c.count(cer.Kind, result)
	return nil
}

// FinishCeremony records how a ceremony ended (claiming it if it is not
// claimed yet), and counts it.
func (c *Core) FinishCeremony(ctx context.Context, cer *Ceremony, result string) {
	if cer == nil {
		return
	}
	var err error
	if cer.claimed {
		err = c.SetResult(ctx, c.db, cer, result)
	} else {
		err = c.claimIn(ctx, c.db, cer, result)
		if errors.Is(err, ErrCeremonyGone) {
			return // finished by another request: that one counts
		}
	}
	if err != nil {
		c.log.Warn("cannot record the ceremony result", "kind", cer.Kind, "result", result, "err", err)
	}
	c.count(cer.Kind, result)
}

func (c *Core) count(kind, result string) {
	if c.metrics != nil {
		c.metrics.Ceremony(kind, result)
	}
}

// SetResult writes a claimed ceremony's result through q (inside the
// transaction of a successful finish).
func (c *Core) SetResult(ctx context.Context, q store.Execer, cer *Ceremony, result string) error {
	_, err := store.Exec(ctx, q, "UPDATE "+c.n.Ceremonies+" SET "+c.q("result")+" = ?, "+c.q("finished_at")+" = ? WHERE "+c.q("id")+" = ?",
		result, c.now(), cer.hash)
	return err
}

// CancelCeremony records a ceremony the browser gave up on (the user
// cancelled, no authenticator, a timeout): what ended it, for the figures.
func (c *Core) CancelCeremony(ctx context.Context, id, kind string) error {
	cer, err := c.peekCeremony(ctx, id, kind)
	if err != nil {
		return err
	}
	if err := c.claimIn(ctx, c.db, cer, ResultCancelled); err != nil {
		return err
	}
	c.count(cer.Kind, ResultCancelled)
	return nil
}
