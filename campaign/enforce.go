package campaign

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// end closes a campaign whose deadline has passed: no more mail, and with
// enforce, the password fallback of its people (enrolled or not, except
// the grace list and those dropped) switches to passkey_required in the
// users table's policy column, the one the application reads, each switch
// audited with the policy it replaced. It returns how many were switched.
func (e *Engine) end(ctx context.Context, c *Campaign, now time.Time) (int, error) {
	t := e.t
	type row struct {
		Recipient int64   `db:"id"`
		Username  string  `db:"username"`
		UserKey   any     `db:"user_key"`
		Policy    *string `db:"policy"`
	}
	var rows []row
	if c.Enforce {
		q := "SELECT r." + t.q("id") + ", i." + t.q("username") + ", i." + t.q("user_key") + ", u." + t.n.PasswordPolicy + " AS " + t.q("policy") +
			" FROM " + t.recipients + " r JOIN " + t.n.Identities + " i ON i." + t.q("id") + " = r." + t.q("identity_id") +
			" JOIN " + t.n.Users + " u ON u." + t.n.UserKey + " = i." + t.q("user_key") +
			" WHERE r." + t.q("campaign_id") + " = ? AND r." + t.q("state") + " <> ? AND r." + t.q("enforced_at") + " IS NULL ORDER BY r." + t.q("id")
		if err := store.Select(ctx, t.db, &rows, q, c.ID, RecipientDropped); err != nil {
			return 0, fmt.Errorf("campaign %q: read who the deadline applies to: %w", c.Name, err)
		}
	}
	grace := map[string]bool{}
	for _, g := range c.Grace {
		grace[g] = true
	}
	var todo []row
	graced := 0
	for _, r := range rows {
		if grace[strings.ToLower(r.Username)] {
			graced++
			continue
		}
		todo = append(todo, r)
	}
	actor := "campaign:" + c.Name
	switched := 0
	// Whole batches: a pass that stops half-way is finished by the next
	// one (recipients already switched have enforced_at set).
	for chunk := range slices.Chunk(todo, batch) {
		err := t.db.InTx(ctx, func(tx *sqlx.Tx) error {
			for _, r := range chunk {
				before := "default"
				if r.Policy != nil {
					before = *r.Policy
				}
				if _, err := store.Exec(ctx, tx, "UPDATE "+t.n.Users+" SET "+t.n.PasswordPolicy+" = ? WHERE "+t.n.UserKey+" = ?", schema.PasswordPasskeyRequired, r.UserKey); err != nil {
					return fmt.Errorf("set the password policy of %s: %w", r.Username, err)
				}
				if _, err := store.Exec(ctx, tx, "UPDATE "+t.recipients+" SET "+t.q("enforced_at")+" = ?, "+t.q("policy_before")+" = ?, "+t.q("updated_at")+" = ? WHERE "+t.q("id")+" = ?",
					now, clip(before, 32), now, r.Recipient); err != nil {
					return err
				}
				if err := t.record(ctx, tx, now, EvEnforce, actor, r.Username, map[string]any{"campaign_id": c.ID, "policy": schema.PasswordPasskeyRequired, "before": before}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return switched, fmt.Errorf("campaign %q: enforce the deadline: %w", c.Name, err)
		}
		switched += len(chunk)
	}
	err := t.db.InTx(ctx, func(tx *sqlx.Tx) error {
		n, err := t.cancelQueued(ctx, tx, now, t.q("campaign_id")+" = ?", "the deadline passed", c.ID)
		if err != nil {
			return err
		}
		var enforced any
		if c.Enforce {
			enforced = now
		}
		if _, err := store.Exec(ctx, tx, "UPDATE "+t.campaigns+" SET "+t.q("state")+" = ?, "+t.q("enforced_at")+" = ?, "+t.q("updated_at")+" = ? WHERE "+t.q("id")+" = ? AND "+t.q("state")+" = ?",
			StateEnded, enforced, now, c.ID, StateActive); err != nil {
			return err
		}
		return t.record(ctx, tx, now, EvEnd, actor, c.Name, map[string]any{"campaign_id": c.ID, "cancelled_messages": n, "enforce": c.Enforce, "switched": switched, "grace": graced})
	})
	if err != nil {
		return switched, fmt.Errorf("campaign %q: end: %w", c.Name, err)
	}
	e.log.Info("campaign ended at its deadline", "campaign", c.Name, "enforce", c.Enforce, "switched", switched, "grace", graced)
	return switched, nil
}
