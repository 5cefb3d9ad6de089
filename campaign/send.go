package campaign

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/passbridge/passbridge/enroll/mail"
	"github.com/passbridge/passbridge/store"
)

// pacer spaces sends evenly: at most perMinute a minute, in real time
// (the SMTP server's limits are in real time, whatever the campaign clock
// says). One message may go at once after a pause (burst 1).
type pacer struct {
	mu    sync.Mutex
	every time.Duration
	next  time.Time
}

func newPacer(perMinute int) *pacer {
	return &pacer{every: time.Minute / time.Duration(max(perMinute, 1))}
}

// wait blocks until the next send may go, or ctx ends.
func (p *pacer) wait(ctx context.Context) error {
	p.mu.Lock()
	now := time.Now()
	at := p.next
	if at.Before(now) {
		at = now
	}
	p.next = at.Add(p.every)
	p.mu.Unlock()
	if d := time.Until(at); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// due is one message to send, with what the mail needs.
type due struct {
	ID          int64   `db:"id"`
	CampaignID  int64   `db:"campaign_id"`
	RecipientID int64   `db:"recipient_id"`
	IdentityID  int64   `db:"identity_id"`
	Step        string  `db:"step"`
	Attempts    int     `db:"attempts"`
	Username    string  `db:"username"`
	Email       *string `db:"email"`
	DisplayName *string `db:"display_name"`
}

// sendDue sends the messages that are due, paced, until none is left, the
// lock is lost or ctx ends. Each message is claimed (queued → sending) in
// one conditional UPDATE before anything goes out.
func (e *Engine) sendDue(ctx context.Context, campaigns []*Campaign, st *Stats) error {
	byID := map[int64]*Campaign{}
	for _, c := range campaigns {
		byID[c.ID] = c
	}
	if len(byID) == 0 {
		return nil
	}
	if e.opts.Links == nil || e.opts.Mail == nil {
		var n int
		if err := store.Get(ctx, e.opts.DB, &n, "SELECT COUNT(*) FROM "+e.t.m+" WHERE "+e.t.q("state")+" = ?", MsgQueued); err == nil && n > 0 {
			e.log.Warn("campaign mail is waiting: sending needs the portal (portal.rp_id, portal.origins) and mail (mail.host)", "queued", n)
		}
		return nil
	}
	t := e.t
	for {
		now := e.now()
		var list []due
		err := store.Select(ctx, t.db, &list, "SELECT "+t.cols("m", "id", "campaign_id", "recipient_id", "identity_id", "step", "attempts")+", "+t.cols("i", "username", "email", "display_name")+
			" FROM "+t.m+" m JOIN "+t.campaigns+" c ON c."+t.q("id")+" = m."+t.q("campaign_id")+" JOIN "+t.n.Identities+" i ON i."+t.q("id")+" = m."+t.q("identity_id")+
			" WHERE m."+t.q("state")+" = ? AND m."+t.q("next_attempt_at")+" <= ? AND c."+t.q("state")+" = ?"+
			" ORDER BY m."+t.q("next_attempt_at")+", m."+t.q("id")+" LIMIT 200", MsgQueued, now, StateActive)
		if err != nil {
			return fmt.Errorf("read due mail: %w", err)
		}
		if len(list) == 0 {
			return nil
		}
		for _, d := range list {
			c := byID[d.CampaignID]
			if c == nil {
				continue // started after this pass read the campaigns
			}
			if ctx.Err() != nil {
				return nil // shutting down: the rest stays queued
			}
			if err := e.lead(ctx); err != nil {
				return err
			}
			if err := e.deliver(ctx, c, d, st); err != nil {
				return err
			}
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// deliver sends one message: claim, link, mail, record.
func (e *Engine) deliver(ctx context.Context, c *Campaign, d due, st *Stats) error {
	t := e.t
	now := e.now()
	// claim takes the message (queued → sending) in one conditional
	// UPDATE: false when it was cancelled or taken meanwhile. It happens
	// as late as possible, right before the mail goes out, so that a kill
	// can leave a message "sending" (unknown) only during the SMTP
	// conversation itself.
	claim := func() (bool, error) {
		res, err := store.Exec(ctx, t.db, "UPDATE "+t.m+" SET "+t.q("state")+" = ?, "+t.q("claimed_by")+" = ?, "+t.q("attempts")+" = "+t.q("attempts")+" + 1 WHERE "+t.q("id")+" = ? AND "+t.q("state")+" = ?",
			MsgSending, clip(e.node, 255), d.ID, MsgQueued)
		if err != nil {
			return false, fmt.Errorf("claim mail: %w", err)
		}
		n, _ := res.RowsAffected()
		return n == 1, nil
	}
	// end claims the message and records an outcome without sending.
	end := func(record func() error) error {
		if ok, err := claim(); !ok || err != nil {
			return err
		}
		return record()
	}
	attempts := d.Attempts + 1
	// Once claimed, the mail goes out even if shutdown begins: it is
	// finished and recorded, within mail.timeout.
	sendCtx := context.WithoutCancel(ctx)
	email := ""
	if d.Email != nil {
		email = *d.Email
	}
	if email == "" {
		return end(func() error { return e.finish(sendCtx, d, MsgCancelled, "no mail address", 0, now) })
	}
	ttl := e.cfg.Portal.LinkLifetime.D()
	if c.Deadline != nil {
		// The link works until the deadline (at most 30 days).
		ttl = max(ttl, min(time.Until(*c.Deadline), 30*24*time.Hour))
	}
	link, err := e.opts.Links.CampaignLink(ctx, d.IdentityID, ttl, "campaign:"+c.Name)
	if errors.Is(err, ErrIneligible) {
		return end(func() error { return e.finish(sendCtx, d, MsgCancelled, err.Error(), 0, now) })
	}
	if err != nil {
		return end(func() error { return e.retry(sendCtx, d, attempts, 0, fmt.Errorf("make the link: %w", err), st) })
	}
	name := d.Username
	if d.DisplayName != nil && *d.DisplayName != "" {
		name = *d.DisplayName
	}
	f := Fields{Name: name, Username: d.Username, Email: email, Company: c.Template.Company, Link: link.URL,
		Expires: when(link.ExpiresAt), Reminder: d.Step != StepInvite}
	if f.Company == "" {
		f.Company = e.cfg.Portal.RPName
	}
	if c.Deadline != nil {
		f.Deadline = when(*c.Deadline)
	}
	r, err := c.Template.render(f)
	if err != nil {
		return end(func() error { return e.finish(sendCtx, d, MsgFailed, err.Error(), link.TokenID, now) })
	}
	to := email
	if name != "" {
		to = fmt.Sprintf("%q <%s>", name, email)
	}
	// Paced right before the mail goes, so that the bound holds for what
	// the server sees. Shutdown while waiting leaves the message queued.
	if err := e.pace.wait(ctx); err != nil {
		return e.expire(sendCtx, link.TokenID)
	}
	if ok, err := claim(); !ok || err != nil {
		return errors.Join(err, e.expire(sendCtx, link.TokenID))
	}
	sendErr := e.opts.Mail.Send(sendCtx, mail.Message{To: to, Subject: r.Subject, Text: r.Text, HTML: r.HTML})
	switch {
	case sendErr == nil:
		st.Sent++
		e.sent.WithLabelValues("sent").Inc()
		return t.db.InTx(sendCtx, func(tx *sqlx.Tx) error {
			at := e.now()
			if _, err := store.Exec(sendCtx, tx, "UPDATE "+t.m+" SET "+t.q("state")+" = ?, "+t.q("sent_at")+" = ?, "+t.q("token_id")+" = ?, "+t.q("error")+" = NULL WHERE "+t.q("id")+" = ? AND "+t.q("state")+" = ?",
				MsgSent, at, link.TokenID, d.ID, MsgSending); err != nil {
				return fmt.Errorf("record the sent mail: %w", err)
			}
			if d.Step != StepInvite {
				return nil
			}
			_, err := store.Exec(sendCtx, tx, "UPDATE "+t.recipients+" SET "+t.q("state")+" = ?, "+t.q("invited_at")+" = ?, "+t.q("updated_at")+" = ? WHERE "+t.q("id")+" = ? AND "+t.q("state")+" = ?",
				RecipientInvited, at, at, d.RecipientID, RecipientPending)
			return err
		})
	case mail.Permanent(sendErr):
		st.Bounced++
		e.sent.WithLabelValues("bounced").Inc()
		e.log.Warn("campaign mail bounced", "campaign", c.Name, "user", d.Username, "step", d.Step, "err", sendErr)
		return e.finish(sendCtx, d, MsgBounced, sendErr.Error(), link.TokenID, now)
	default:
		return e.retry(sendCtx, d, attempts, link.TokenID, sendErr, st)
	}
}

// retry puts a message back in the queue after a temporary failure, or
// gives it up after campaign.max_attempts. Its link is expired: the next
// attempt makes a new one.
func (e *Engine) retry(ctx context.Context, d due, attempts int, tokenID int64, cause error, st *Stats) error {
	now := e.now()
	if attempts >= e.cfg.Campaign.MaxAttempts {
		st.Failed++
		e.sent.WithLabelValues("failed").Inc()
		e.log.Warn("campaign mail given up", "user", d.Username, "step", d.Step, "attempts", attempts, "err", cause)
		return e.finish(ctx, d, MsgFailed, fmt.Sprintf("gave up after %d attempts: %v", attempts, cause), tokenID, now)
	}
	st.Retried++
	e.sent.WithLabelValues("retry").Inc()
	next := now.Add(e.delay(attempts))
	e.log.Warn("campaign mail failed; will retry", "user", d.Username, "step", d.Step, "attempt", attempts, "next", next.Format(time.RFC3339), "err", cause)
	t := e.t
	return t.db.InTx(ctx, func(tx *sqlx.Tx) error {
		if tokenID != 0 {
			if _, err := store.Exec(ctx, tx, "UPDATE "+t.n.Tokens+" SET "+t.q("expires_at")+" = ? WHERE "+t.q("id")+" = ? AND "+t.q("used_at")+" IS NULL", linkNow(), tokenID); err != nil {
				return err
			}
		}
		_, err := store.Exec(ctx, tx, "UPDATE "+t.m+" SET "+t.q("state")+" = ?, "+t.q("next_attempt_at")+" = ?, "+t.q("error")+" = ? WHERE "+t.q("id")+" = ? AND "+t.q("state")+" = ?",
			MsgQueued, next, clip(cause.Error(), 2000), d.ID, MsgSending)
		if err != nil {
			return fmt.Errorf("requeue mail: %w", err)
		}
		return nil
	})
}

// expire ends a link that no mail carried.
func (e *Engine) expire(ctx context.Context, tokenID int64) error {
	_, err := store.Exec(ctx, e.t.db, "UPDATE "+e.t.n.Tokens+" SET "+e.t.q("expires_at")+" = ? WHERE "+e.t.q("id")+" = ? AND "+e.t.q("used_at")+" IS NULL", linkNow(), tokenID)
	return err
}

// finish records a message's final state other than sent; its link, if it
// got one, is expired.
func (e *Engine) finish(ctx context.Context, d due, state, why string, tokenID int64, now time.Time) error {
	t := e.t
	var tok any
	if tokenID != 0 {
		tok = tokenID
	}
	return t.db.InTx(ctx, func(tx *sqlx.Tx) error {
		if tokenID != 0 {
			if _, err := store.Exec(ctx, tx, "UPDATE "+t.n.Tokens+" SET "+t.q("expires_at")+" = ? WHERE "+t.q("id")+" = ? AND "+t.q("used_at")+" IS NULL", linkNow(), tokenID); err != nil {
				return err
			}
		}
		_, err := store.Exec(ctx, tx, "UPDATE "+t.m+" SET "+t.q("state")+" = ?, "+t.q("token_id")+" = ?, "+t.q("error")+" = ? WHERE "+t.q("id")+" = ? AND "+t.q("state")+" = ?",
			state, tok, clip(why, 2000), d.ID, MsgSending)
		if err != nil {
			return fmt.Errorf("record the mail's end: %w", err)
		}
		return nil
	})
}
