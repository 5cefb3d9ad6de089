package enroll

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/passbridge/passbridge/store"
)

// A WebAuthn ceremony spans two requests (begin, finish), which may reach
// two replicas. Its go-webauthn SessionData is stored whole, as JSON, in
// passbridge_ceremonies, under the SHA-256 of a random ceremony ID that the
// browser gets with the options and sends back with the response. The row
// is claimed once (finished_at set in one conditional UPDATE), so a
// response can never be replayed, and it is kept with its result for the
// adoption figures (time to enroll, abandonment).

// Ceremony kinds.
const (
	kindRegistration = "registration"
	kindLogin        = "login"
)

// Ceremony results.
const (
	resultSucceeded = "succeeded"
	resultFailed    = "failed"
	resultRefused   = "refused" // the policy or the account state said no
	resultCancelled = "cancelled"
	resultClaimed   = "claimed" // finish under way
)

// ceremony is a claimed ceremony: what begin stored.
type ceremony struct {
	hash       string
	kind       string
	identityID sql.NullInt64
	session    webauthn.SessionData
	createdAt  time.Time
}

// beginCeremony stores a ceremony and returns the ID the browser keeps.
func (p *Portal) beginCeremony(ctx context.Context, kind string, identityID *int64, sd *webauthn.SessionData) (string, error) {
	raw, err := json.Marshal(sd)
	if err != nil {
		return "", fmt.Errorf("encode ceremony: %w", err)
	}
	secret, hash := newSecret()
	now := p.data.now()
	var ident any
	if identityID != nil {
		ident = *identityID
	}
	_, err = store.Exec(ctx, p.data.db, "INSERT INTO "+p.data.n.Ceremonies+" ("+p.data.cols("", "id", "kind", "identity_id", "session_data", "created_at", "expires_at")+") VALUES (?, ?, ?, ?, ?, ?)",
		hash, kind, ident, string(raw), now, now.Add(p.cfg.Portal.CeremonyTimeout.D()))
	if err != nil {
		return "", fmt.Errorf("store ceremony: %w", err)
	}
	return secret, nil
}

// errCeremonyGone is what the browser hears about a ceremony that is
// unknown, expired, of another kind or already finished.
var errCeremonyGone = &userError{Status: http.StatusBadRequest, Code: "ceremony_expired",
	Message: "This request has expired or was already used. Please try again."}

// claimCeremony takes a ceremony for finishing: it must exist, be of kind,
// not be expired, and not be claimed before. Exactly one caller, on any
// replica, wins the claim.
func (p *Portal) claimCeremony(ctx context.Context, id, kind string) (*ceremony, error) {
	if !validSecret(id) {
		return nil, errCeremonyGone
	}
	hash := hashSecret(id)
	now := p.data.now()
	var row struct {
		Kind       string        `db:"kind"`
		IdentityID sql.NullInt64 `db:"identity_id"`
		Data       string        `db:"session_data"`
		CreatedAt  time.Time     `db:"created_at"`
	}
	q := p.data.q
	cols := p.data.cols("", "kind", "identity_id", "session_data", "created_at")
	claim := "UPDATE " + p.data.n.Ceremonies + " SET " + q("finished_at") + " = ?, " + q("result") + " = ? WHERE " + q("id") + " = ? AND " + q("kind") + " = ? AND " + q("finished_at") + " IS NULL AND " + q("expires_at") + " > ?"
	if p.data.d.Kind() != store.MySQL {
		// One round trip: claim and read at once.
		err := store.Get(ctx, p.data.db, &row, claim+" RETURNING "+cols, now, resultClaimed, hash, kind, now)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, errCeremonyGone
		}
		if err != nil {
			return nil, fmt.Errorf("claim ceremony: %w", err)
		}
	} else {
		// MariaDB has no UPDATE ... RETURNING: read, then claim; only
		// the claim that changes the row wins.
		err := store.Get(ctx, p.data.db, &row, "SELECT "+cols+" FROM "+p.data.n.Ceremonies+
			" WHERE "+q("id")+" = ? AND "+q("kind")+" = ? AND "+q("finished_at")+" IS NULL AND "+q("expires_at")+" > ?", hash, kind, now)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, errCeremonyGone
		}
		if err != nil {
			return nil, fmt.Errorf("read ceremony: %w", err)
		}
		res, err := store.Exec(ctx, p.data.db, claim, now, resultClaimed, hash, kind, now)
		if err != nil {
			return nil, fmt.Errorf("claim ceremony: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return nil, errCeremonyGone // another request claimed it first
		}
	}
	c := &ceremony{hash: hash, kind: row.Kind, identityID: row.IdentityID, createdAt: row.CreatedAt}
	if err := json.Unmarshal([]byte(row.Data), &c.session); err != nil {
		return nil, fmt.Errorf("ceremony session data: %w", err)
	}
	return c, nil
}

// finishCeremony records how a claimed ceremony ended.
func (p *Portal) finishCeremony(ctx context.Context, c *ceremony, result string) {
	if c == nil {
		return
	}
	if err := p.setResult(ctx, p.data.db, c, result); err != nil {
		p.log.Warn("cannot record the ceremony result", "kind", c.kind, "result", result, "err", err)
	}
	p.metrics.Ceremony(c.kind, result)
}

// setResult writes a ceremony's result through q (inside the transaction
// of a successful finish).
func (p *Portal) setResult(ctx context.Context, q store.Querier, c *ceremony, result string) error {
	_, err := store.Exec(ctx, q, "UPDATE "+p.data.n.Ceremonies+" SET "+p.data.q("result")+" = ?, "+p.data.q("finished_at")+" = ? WHERE "+p.data.q("id")+" = ?",
		result, p.data.now(), c.hash)
	return err
}

// cancelCeremony records a ceremony the browser gave up on (the user
// cancelled, no authenticator, a timeout): what ended it, for the figures.
func (p *Portal) cancelCeremony(ctx context.Context, id, kind string) error {
	c, err := p.claimCeremony(ctx, id, kind)
	if err != nil {
		return err
	}
	p.finishCeremony(ctx, c, resultCancelled)
	return nil
}
