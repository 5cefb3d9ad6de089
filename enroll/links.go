package enroll

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/labstack/echo/v4"

	"github.com/passbridge/passbridge/campaign"
	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/signin"
	"github.com/passbridge/passbridge/store"
)

// Enrollment links are how IT lets someone in who cannot (or should not)
// use a password: `passbridge enroll link USER` makes a single-use,
// expiring link. Only the SHA-256 of its secret is stored
// (passbridge_tokens), so the table cannot be turned into links.

// Link kinds.
const (
	LinkEnroll   = "enroll"
	LinkRecovery = "recovery" // a recovery session: the new passkey is mailed about, old ones may be revoked
	// LinkCampaign is mailed by an enrollment campaign (package campaign).
	// A person's invitation and reminders each carry one and all stay
	// valid (an older mail still works) until the person enrolls, leaves
	// the campaign or it ends; it signs in only the person it was made for.
	LinkCampaign = "campaign"
)

// link is a stored enrollment link.
type link struct {
	ID         int64     `db:"id"`
	Kind       string    `db:"kind"`
	IdentityID int64     `db:"identity_id"`
	ExpiresAt  time.Time `db:"expires_at"`
}

// peekLink returns the link of a secret if it is usable now, nil if not.
func (s *data) peekLink(ctx context.Context, secret string) (*link, error) {
	if !validSecret(secret) {
		return nil, nil
	}
	var l link
	err := store.Get(ctx, s.db, &l, "SELECT "+s.cols("", "id", "kind", "identity_id", "expires_at")+" FROM "+s.n.Tokens+
		" WHERE "+s.q("token_hash")+" = ? AND "+s.q("used_at")+" IS NULL AND "+s.q("expires_at")+" > ?", hashSecret(secret), s.now())
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read link: %w", err)
	}
	return &l, nil
}

// claimLink uses a link up: one conditional UPDATE, so that of two
// requests with the same link, on any replicas, exactly one succeeds.
func (s *data) claimLink(ctx context.Context, secret string) (*link, error) {
	l, err := s.peekLink(ctx, secret)
	if err != nil || l == nil {
		return nil, err
	}
	now := s.now()
	res, err := store.Exec(ctx, s.db, "UPDATE "+s.n.Tokens+" SET "+s.q("used_at")+" = ? WHERE "+s.q("id")+" = ? AND "+s.q("used_at")+" IS NULL AND "+s.q("expires_at")+" > ?", now, l.ID, now)
	if err != nil {
		return nil, fmt.Errorf("use link: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return nil, nil
	}
	return l, nil
}

// LinkOptions shape a new link.
type LinkOptions struct {
	Kind string // LinkEnroll (default)
	// TTL is how long the link is valid (default portal.link_lifetime).
	TTL time.Duration
	// CreatedBy names who asked for it ("cli:root", an admin's username).
	CreatedBy string
}

// Link is a new enrollment link, as handed to IT.
type Link struct {
	URL       string    `json:"url"`
	Kind      string    `json:"kind"`
	Username  string    `json:"username"`
	Name      string    `json:"name"`
	Email     string    `json:"email,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
}

// IssueLink makes a one-time link for the identity that user names (a
// username, an email or a directory ID). Earlier unused links of the same
// kind for that identity stop working: only the newest one handed out is
// valid. The identity must be allowed to use the portal.
func IssueLink(ctx context.Context, db *store.DB, cfg *config.Config, user string, o LinkOptions) (*Link, error) {
	if cfg.Portal.RPID == "" || len(cfg.Portal.Origins) == 0 {
		return nil, fmt.Errorf("links need the portal: %w", ErrNotConfigured)
	}
	switch o.Kind {
	case "":
		o.Kind = LinkEnroll
	case LinkEnroll:
	case LinkRecovery:
		if !cfg.Portal.Recovery.Link {
			return nil, errors.New("recovery links are off: set portal.recovery.link: true")
		}
	default:
		return nil, fmt.Errorf("unknown link kind %q", o.Kind)
	}
	if o.TTL == 0 {
		o.TTL = cfg.Portal.LinkLifetime.D()
	}
	if o.TTL < time.Minute || o.TTL > 30*24*time.Hour {
		return nil, fmt.Errorf("a link must be valid between 1m and 720h (got %s)", o.TTL)
	}
	core, err := signin.New(cfg, db, signin.Options{OnRecord: onRecord})
	if err != nil {
		return nil, err
	}
	s := newData(core, db, cfg)
	user = strings.TrimSpace(user)
	if user == "" {
		return nil, errors.New("which user? give a username, an email or a directory ID")
	}
	// Exactly as typed first: the plain indexes answer it (on 100,000
	// identities the case-insensitive form is a scan, 20-30 ms a link);
	// the case-insensitive form only when that finds nobody.
	var its []*identity
	err = store.Select(ctx, db, &its, s.core.SelectIdentities()+" WHERE "+s.q("directory_id")+" = ? OR "+s.q("username")+" = ? OR "+s.q("email")+" = ? ORDER BY "+s.q("id"),
		user, user, user)
	if err == nil && len(its) == 0 {
		lower := strings.ToLower(user)
		err = store.Select(ctx, db, &its, s.core.SelectIdentities()+" WHERE LOWER("+s.q("username")+") = ? OR LOWER("+s.q("email")+") = ? ORDER BY "+s.q("id"),
			lower, lower)
	}
	if err != nil {
		return nil, fmt.Errorf("find %q: %w", user, err)
	}
	switch len(its) {
	case 0:
		return nil, fmt.Errorf("no identity %q: the directory sync has not seen such a user (try `passbridge users list`)", user)
	case 1:
	default:
		var names []string
		for _, it := range its {
			names = append(names, it.Username+" ("+it.DirectoryID+")")
		}
		return nil, fmt.Errorf("%q names %d identities: %s; give the directory ID", user, len(its), strings.Join(names, ", "))
	}
	it := its[0]
	it.UserKey = schema.NormKey(it.UserKey)
	if why := it.Refusal(); why != "" {
		return nil, fmt.Errorf("%s cannot use the portal: %s (identity state %s, link %s)", it.Username, strings.TrimSuffix(why, "."), it.State, it.LinkState)
	}
	now := s.now()
	l := &Link{Kind: o.Kind, Username: it.Username, Name: it.Name(), Email: it.Email.String, ExpiresAt: now.Add(o.TTL)}
	var secret string
	err = db.InTx(ctx, func(tx *sqlx.Tx) error {
		if _, err := store.Exec(ctx, tx, "UPDATE "+s.n.Tokens+" SET "+s.q("expires_at")+" = ? WHERE "+s.q("identity_id")+" = ? AND "+s.q("kind")+" = ? AND "+s.q("used_at")+" IS NULL AND "+s.q("expires_at")+" > ?",
			now, it.ID, o.Kind, now); err != nil {
			return err
		}
		var err error
		secret, _, err = s.insertLink(ctx, tx, it, o.Kind, o.CreatedBy, now, l.ExpiresAt)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("issue link: %w", err)
	}
	l.URL = linkBase(cfg) + "/link/" + secret
	return l, nil
}

// insertLink stores a new link of kind for the identity, valid until
// expires, with its link.issue audit entry, through tx; it returns the
// secret for the URL and the link's id.
func (s *data) insertLink(ctx context.Context, tx store.Querier, it *identity, kind, createdBy string, now, expires time.Time) (string, int64, error) {
	secret, hash := newSecret()
	id, err := s.d.InsertID(ctx, tx, "INSERT INTO "+s.n.Tokens+" ("+s.cols("", "token_hash", "kind", "identity_id", "created_by", "created_at", "expires_at")+") VALUES (?, ?, ?, ?, ?, ?)",
		"id", hash, kind, it.ID, clip(createdBy, 255), now, expires)
	if err != nil {
		return "", 0, err
	}
	err = s.record(ctx, tx, event{Event: evLinkIssued, Success: true, Actor: createdBy, Target: it.Username,
		Detail: map[string]any{"kind": kind, "link_id": id, "expires_at": expires}})
	return secret, id, err
}

// linkBase is the address links start with (portal.public_url, else the
// first origin).
func linkBase(cfg *config.Config) string {
	base := strings.TrimRight(cfg.Portal.PublicURL, "/")
	if base == "" {
		base = strings.TrimRight(cfg.Portal.Origins[0], "/")
	}
	return base
}

// CampaignLink makes the one-time link of a campaign mail (campaign.Links):
// for the identity only, valid for ttl (1m to 720h), audited like every
// link. It does not end the person's other links: an earlier mail of the
// campaign keeps working. An identity that may not use the portal is an
// error wrapping campaign.ErrIneligible.
func (p *Portal) CampaignLink(ctx context.Context, identityID int64, ttl time.Duration, createdBy string) (campaign.Link, error) {
	it, err := p.data.identityByID(ctx, identityID)
	if err != nil {
		return campaign.Link{}, err
	}
	if it == nil {
		return campaign.Link{}, fmt.Errorf("identity %d is gone: %w", identityID, campaign.ErrIneligible)
	}
	if why := it.Refusal(); why != "" {
		return campaign.Link{}, fmt.Errorf("%s: %s (%w)", it.Username, strings.TrimSuffix(why, "."), campaign.ErrIneligible)
	}
	ttl = min(max(ttl, time.Minute), 30*24*time.Hour)
	now := p.data.now()
	l := campaign.Link{ExpiresAt: now.Add(ttl)}
	var secret string
	err = p.data.db.InTx(ctx, func(tx *sqlx.Tx) error {
		var err error
		secret, l.TokenID, err = p.data.insertLink(ctx, tx, it, LinkCampaign, createdBy, now, l.ExpiresAt)
		return err
	})
	if err != nil {
		return campaign.Link{}, fmt.Errorf("issue a campaign link: %w", err)
	}
	l.URL = p.baseURL + "/link/" + secret
	return l, nil
}

func itoa(n int) string { return strconv.Itoa(n) }

// someoneElse refuses a campaign link opened in a browser signed in as
// another person: a forwarded or mistyped mail must never switch the
// session to the link's owner, nor attach anything to the visitor.
func (p *Portal) someoneElse(c echo.Context, l *link, it *identity) error {
	s := currentSession(c)
	if l.Kind != LinkCampaign || s == nil || s.identity == nil || s.identity.ID == it.ID {
		return nil
	}
	p.audit(c, event{Event: evSignInFailed, Target: it.Username, Detail: map[string]any{"method": methodLink, "reason": "campaign link of another person", "signed_in": s.identity.Username}})
	return &userError{Status: http.StatusConflict, Code: "other_person",
		Message: "This link was mailed to someone else, and you are signed in as " + s.identity.Name() + ". It was not used. If it is yours, sign out first and open it again."}
}
