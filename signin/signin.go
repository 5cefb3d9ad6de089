// Package signin is the passkey sign-in core that every way into passbridge
// shares: the employee portal (package enroll), the OpenID Connect provider
// and the signed-assertion API (package appsignin). It runs the WebAuthn
// ceremonies (go-webauthn SessionData stored whole in passbridge_ceremonies,
// claimed exactly once across replicas), the discoverable login with user
// verification required, and the policy: allowed AAGUIDs, synced passkeys,
// disabled or deleted identities, inactive users rows and clone warnings
// refused, every outcome audited.
//
// A sign-in is two calls: Verify checks the assertion and the policy
// (reads only, except to record a failure), and Commit writes it in one
// transaction: the ceremony's claim and result, the passkey's counter and
// last use, the caller's own rows (a portal session, an authorization code,
// a signed assertion's ID) and the audit entry. One commit per ceremony.
package signin

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/passbridge/passbridge/agent/metrics"
	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/enroll/aaguid"
	"github.com/passbridge/passbridge/internal/httpjson"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// Error is an error meant for the person signing in: its message is shown
// as it is, its code lets a script or an application react (the error of
// every passbridge JSON surface).
type Error = httpjson.Error

// Options are the core's dependencies besides the configuration.
type Options struct {
	Log *slog.Logger
	// Metrics receives ceremony counts; nil records nothing.
	Metrics *metrics.Metrics
	// OnRecord, when set, hears of every audit event written (the tests
	// check that each kind of event is recorded somewhere).
	OnRecord func(event string)
}

// Core is the sign-in core of one configuration.
type Core struct {
	cfg      *config.Config
	log      *slog.Logger
	metrics  *metrics.Metrics
	onRecord func(string)
	wa       *webauthn.WebAuthn
	policy   Policy

	seal sealKeys

	cwiOnce sync.Once
	cwiSQL  string

	db  *store.DB
	n   schema.Names
	d   store.Dialect
	now func() time.Time
}

// ErrNotConfigured means portal.rp_id and portal.origins are not set: there
// is no relying party to sign in to.
var ErrNotConfigured = errors.New("the portal needs portal.rp_id and portal.origins")

// New builds the core. It checks the relying party (RP ID and origins) now,
// so that a wrong one stops the daemon at start instead of failing the
// first employee's enrollment.
func New(cfg *config.Config, db *store.DB, opts Options) (*Core, error) {
	if cfg.Portal.RPID == "" || len(cfg.Portal.Origins) == 0 {
		return nil, ErrNotConfigured
	}
	if db == nil {
		return nil, errors.New("sign-in: no database")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	pol, err := NewPolicy(cfg.Portal.Policy)
	if err != nil {
		return nil, err
	}
	timeout := cfg.Portal.CeremonyTimeout.D()
	wa, err := webauthn.New(&webauthn.Config{
		RPID:          cfg.Portal.RPID,
		RPDisplayName: cfg.Portal.RPName,
		// Passkeys are used on the portal's origins, on the related
		// origins (portal.related_origins, listed at /.well-known/webauthn
		// for the browsers) and on the applications' origins
		// (oidc.clients[].origins, each client's assertions checked
		// against its own).
		RPOrigins:             rpOrigins(cfg),
		AttestationPreference: protocol.ConveyancePreference(cfg.Portal.Policy.Attestation),
		AuthenticatorSelection: protocol.AuthenticatorSelection{
			ResidentKey:        protocol.ResidentKeyRequirementRequired,
			RequireResidentKey: protocol.ResidentKeyRequired(),
			UserVerification:   protocol.VerificationRequired,
		},
		Timeouts: webauthn.TimeoutsConfig{
			Login:        webauthn.TimeoutConfig{Enforce: true, Timeout: timeout, TimeoutUVD: timeout},
			Registration: webauthn.TimeoutConfig{Enforce: true, Timeout: timeout, TimeoutUVD: timeout},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("portal: portal.rp_id / portal.origins: %w", err)
	}
	return &Core{
		cfg: cfg, log: opts.Log, metrics: opts.Metrics, onRecord: opts.OnRecord, wa: wa, policy: pol,
		db: db, n: schema.NamesFor(cfg), d: db.Dialect(),
		now: func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) },
	}, nil
}

func rpOrigins(cfg *config.Config) []string {
	out := append(append([]string{}, cfg.Portal.Origins...), cfg.Portal.RelatedOrigins...)
	for _, c := range cfg.OIDC.Clients {
		for _, o := range c.Origins {
			if !slices.Contains(out, o) {
				out = append(out, o)
			}
		}
	}
	return out
}

// Policy is portal.policy, parsed.
func (c *Core) Policy() Policy { return c.policy }

// Now is the core's clock: UTC, microseconds (what every engine stores).
func (c *Core) Now() time.Time { return c.now() }

// SetClock replaces the clock (tests that travel in time).
func (c *Core) SetClock(now func() time.Time) { c.now = now }

func (c *Core) q(name string) string { return c.d.Quote(name) }

// Cols quotes a list of column names, optionally prefixed by a table alias.
func (c *Core) Cols(alias string, names ...string) string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = c.q(n)
		if alias != "" {
			out[i] = alias + "." + out[i]
		}
	}
	return strings.Join(out, ", ")
}

// Policy is portal.policy, parsed: what the enterprise accepts as a passkey,
// at registration and at every sign-in (a policy tightened after a passkey
// was registered refuses it from then on).
type Policy struct {
	allowed      [][]byte // raw AAGUIDs; empty allows any
	forbidSynced bool
	// Max is the number of active passkeys a user may have.
	Max int
}

// NewPolicy parses portal.policy.
func NewPolicy(c config.Policy) (Policy, error) {
	p := Policy{forbidSynced: c.ForbidSynced, Max: c.MaxPasskeys}
	for i, s := range c.AllowedAAGUIDs {
		b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
		if err != nil || len(b) != 16 {
			return p, fmt.Errorf("portal.policy.allowed_aaguids[%d]: not an AAGUID: %q", i, s)
		}
		p.allowed = append(p.allowed, b)
	}
	return p, nil
}

// Check refuses a credential the policy does not allow, with a message the
// employee can act on.
func (p Policy) Check(c *webauthn.Credential) *Error {
	if len(p.allowed) > 0 {
		ok := false
		for _, a := range p.allowed {
			if bytes.Equal(a, c.Authenticator.AAGUID) {
				ok = true
			}
		}
		if !ok {
			what := aaguid.Name(c.Authenticator.AAGUID)
			if isZero(c.Authenticator.AAGUID) {
				what = "This authenticator does not say which model it is, so"
			} else {
				what = "“" + what + "” (" + aaguid.Format(c.Authenticator.AAGUID) + ") is not among the authenticators your company approved, so"
			}
			return &Error{Status: http.StatusForbidden, Code: "policy_authenticator",
				Message: what + " it cannot be used here. Use an approved security key or device; IT can tell you which."}
		}
	}
	if p.forbidSynced && c.Flags.BackupEligible {
		return &Error{Status: http.StatusForbidden, Code: "policy_synced",
			Message: "This passkey would be synced to your other devices (a password manager or cloud keychain), and company policy allows only device-bound passkeys, such as a security key or Windows Hello. Choose another authenticator."}
	}
	return nil
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
