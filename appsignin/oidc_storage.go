package appsignin

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/signin"
	"github.com/passbridge/passbridge/store"
)

// storage is zitadel/oidc's op.Storage on passbridge's tables: authorization
// requests (passbridge_oidc_requests) and access tokens
// (passbridge_oidc_tokens) in the database, so that any replica serves any
// step of a flow; the signing keys are the Keys every replica shares.
// Refresh tokens are not issued (only the authorization_code grant is
// offered).
type storage struct{ a *Apps }

var _ op.Storage = (*storage)(nil)
var _ op.CanSetUserinfoFromRequest = (*storage)(nil)

// authRequestLifetime bounds a sign-in from the authorization request to
// the code's exchange.
const authRequestLifetime = 10 * time.Minute

// authRequest is one stored authorization request.
type authRequest struct {
	ID         string
	Req        oidc.AuthRequest
	IdentityID sql.NullInt64
	Subject    string
	AMR        []string
	AuthTime   time.Time
}

func (r *authRequest) GetID() string                      { return r.ID }
func (r *authRequest) GetACR() string                     { return "" }
func (r *authRequest) GetAMR() []string                   { return r.AMR }
func (r *authRequest) GetAudience() []string              { return []string{r.Req.ClientID} }
func (r *authRequest) GetAuthTime() time.Time             { return r.AuthTime }
func (r *authRequest) GetClientID() string                { return r.Req.ClientID }
func (r *authRequest) GetNonce() string                   { return r.Req.Nonce }
func (r *authRequest) GetRedirectURI() string             { return r.Req.RedirectURI }
func (r *authRequest) GetState() string                   { return r.Req.State }
func (r *authRequest) GetSubject() string                 { return r.Subject }
func (r *authRequest) Done() bool                         { return r.Subject != "" }
func (r *authRequest) GetScopes() []string                { return r.Req.Scopes }
func (r *authRequest) GetResponseMode() oidc.ResponseMode { return r.Req.ResponseMode }
func (r *authRequest) GetResponseType() oidc.ResponseType { return r.Req.ResponseType }
func (r *authRequest) GetCodeChallenge() *oidc.CodeChallenge {
	if r.Req.CodeChallenge == "" {
		return nil
	}
	m := r.Req.CodeChallengeMethod
	if m == "" {
		m = oidc.CodeChallengeMethodPlain
	}
	return &oidc.CodeChallenge{Challenge: r.Req.CodeChallenge, Method: m}
}

func (s *storage) q(name string) string { return s.a.n.Column(name) }

func (s *storage) requests() string { return s.a.n.Table("oidc_requests") }
func (s *storage) tokens() string   { return s.a.n.Table("oidc_tokens") }

// CreateAuthRequest stores a validated authorization request. A public
// client must use PKCE with S256 (a plain challenge is the verifier
// itself, which protects nothing).
func (s *storage) CreateAuthRequest(ctx context.Context, req *oidc.AuthRequest, _ string) (op.AuthRequest, error) {
	cl := s.a.clients[req.ClientID]
	if cl == nil {
		return nil, oidc.ErrInvalidClient()
	}
	if cl.Public && (req.CodeChallenge == "" || req.CodeChallengeMethod != oidc.CodeChallengeMethodS256) {
		return nil, oidc.ErrInvalidRequest().WithDescription("this client is public: PKCE with code_challenge_method S256 is required")
	}
	if req.CodeChallenge != "" && req.CodeChallengeMethod != oidc.CodeChallengeMethodS256 {
		return nil, oidc.ErrInvalidRequest().WithDescription("only code_challenge_method S256 is supported")
	}
	raw, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	id, _ := signin.NewSecret()
	now := s.a.core.Now()
	q := s.q
	_, err = store.Exec(ctx, s.a.db, "INSERT INTO "+s.requests()+" ("+q("id")+", "+q("client_id")+", "+q("request")+", "+q("created_at")+", "+q("expires_at")+") VALUES (?, ?, ?, ?, ?)",
		signin.HashSecret(id), req.ClientID, string(raw), now, now.Add(authRequestLifetime))
	if err != nil {
		return nil, fmt.Errorf("store the authorization request: %w", err)
	}
	return &authRequest{ID: id, Req: *req}, nil
}

// requestCols are the columns of an authorization request row.
func (s *storage) requestCols() string {
	q := s.q
	return q("id") + ", " + q("request") + ", " + q("identity_id") + ", " + q("subject") + ", " + q("amr") + ", " + q("auth_time")
}

type requestRow struct {
	Hash       string         `db:"id"`
	Request    string         `db:"request"`
	IdentityID sql.NullInt64  `db:"identity_id"`
	Subject    sql.NullString `db:"subject"`
	AMR        sql.NullString `db:"amr"`
	AuthTime   sql.NullTime   `db:"auth_time"`
}

func (row *requestRow) authRequest(id string) (*authRequest, error) {
	r := &authRequest{ID: id, IdentityID: row.IdentityID, Subject: row.Subject.String}
	if err := json.Unmarshal([]byte(row.Request), &r.Req); err != nil {
		return nil, fmt.Errorf("stored authorization request: %w", err)
	}
	if row.AMR.String != "" {
		r.AMR = strings.Split(row.AMR.String, " ")
	}
	r.AuthTime = row.AuthTime.Time
	return r, nil
}

var errNoRequest = errors.New("no such authorization request (expired or already used)")

// AuthRequestByID reads a pending authorization request.
func (s *storage) AuthRequestByID(ctx context.Context, id string) (op.AuthRequest, error) {
	return s.requestByID(ctx, id)
}

func (s *storage) requestByID(ctx context.Context, id string) (*authRequest, error) {
	if !signin.ValidSecret(id) {
		return nil, errNoRequest
	}
	var row requestRow
	err := store.Get(ctx, s.a.db, &row, "SELECT "+s.requestCols()+" FROM "+s.requests()+" WHERE "+s.q("id")+" = ? AND "+s.q("expires_at")+" > ? AND "+s.q("code_used_at")+" IS NULL",
		signin.HashSecret(id), s.a.core.Now())
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errNoRequest
	}
	if err != nil {
		return nil, err
	}
	r, err := row.authRequest(id)
	if err != nil {
		return nil, err
	}
	// A request of a client this replica does not have (removed from
	// oidc.clients since, or a replica on another configuration) is gone:
	// nothing can be signed in for it here.
	if s.a.clients[r.Req.ClientID] == nil {
		return nil, errNoRequest
	}
	return r, nil
}

// AuthRequestByCode claims an authorization code: it works once. A code
// presented again revokes the tokens of its first use (RFC 6749 4.1.2: a
// code used twice may have been stolen).
func (s *storage) AuthRequestByCode(ctx context.Context, code string) (op.AuthRequest, error) {
	if code == "" || len(code) > 512 {
		return nil, errNoRequest
	}
	hash := signin.HashSecret(code)
	now := s.a.core.Now()
	q := s.q
	res, err := store.Exec(ctx, s.a.db, "UPDATE "+s.requests()+" SET "+q("code_used_at")+" = ? WHERE "+q("code_hash")+" = ? AND "+q("code_used_at")+" IS NULL AND "+q("expires_at")+" > ?", now, hash, now)
	if err != nil {
		return nil, err
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		s.replayed(ctx, hash)
		return nil, errNoRequest
	}
	var row requestRow
	if err := store.Get(ctx, s.a.db, &row, "SELECT "+s.requestCols()+" FROM "+s.requests()+" WHERE "+q("code_hash")+" = ?", hash); err != nil {
		return nil, err
	}
	r, err := row.authRequest(row.Hash)
	if err != nil {
		return nil, err
	}
	// The token rows refer to the request by its stored hash.
	r.ID = row.Hash
	return r, nil
}

// replayed revokes the tokens of a code that was already used, and
// records it.
func (s *storage) replayed(ctx context.Context, codeHash string) {
	q := s.q
	var row struct {
		Hash     string `db:"id"`
		ClientID string `db:"client_id"`
	}
	if err := store.Get(ctx, s.a.db, &row, "SELECT "+q("id")+", "+q("client_id")+" FROM "+s.requests()+" WHERE "+q("code_hash")+" = ? AND "+q("code_used_at")+" IS NOT NULL", codeHash); err != nil {
		return // unknown or expired code: nothing to revoke
	}
	res, err := store.Exec(ctx, s.a.db, "UPDATE "+s.tokens()+" SET "+q("revoked_at")+" = ? WHERE "+q("request_id")+" = ? AND "+q("revoked_at")+" IS NULL", s.a.core.Now(), row.Hash)
	if err != nil {
		s.a.log.Error("cannot revoke the tokens of a replayed authorization code", "client_id", row.ClientID, "err", err)
		return
	}
	n, _ := res.RowsAffected()
	s.a.audit(ctx, signin.Event{Event: EvCodeReplayed, Detail: map[string]any{"client_id": row.ClientID, "revoked_tokens": n}})
}

// SaveAuthCode keeps the code of a finished authorization request (its
// hash only).
func (s *storage) SaveAuthCode(ctx context.Context, id, code string) error {
	if !signin.ValidSecret(id) {
		return errNoRequest
	}
	q := s.q
	res, err := store.Exec(ctx, s.a.db, "UPDATE "+s.requests()+" SET "+q("code_hash")+" = ? WHERE "+q("id")+" = ? AND "+q("subject")+" IS NOT NULL AND "+q("code_hash")+" IS NULL",
		signin.HashSecret(code), signin.HashSecret(id))
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return errNoRequest
	}
	return nil
}

// DeleteAuthRequest is called once the code is exchanged: the row stays
// (its code marked used) until it expires, so that a replayed code is
// recognized; the janitor deletes it.
func (s *storage) DeleteAuthRequest(context.Context, string) error { return nil }

// CreateAccessToken records an access token (a JWT whose ID is the row's)
// so that userinfo can refuse a revoked one.
func (s *storage) CreateAccessToken(ctx context.Context, req op.TokenRequest) (string, time.Time, error) {
	ar, ok := req.(*authRequest)
	if !ok {
		return "", time.Time{}, oidc.ErrUnsupportedGrantType()
	}
	id, _ := signin.NewSecret()
	now := s.a.core.Now()
	exp := now.Add(s.a.cfg.OIDC.TokenLifetime.D())
	q := s.q
	_, err := store.Exec(ctx, s.a.db, "INSERT INTO "+s.tokens()+" ("+q("id")+", "+q("request_id")+", "+q("client_id")+", "+q("subject")+", "+q("identity_id")+", "+q("created_at")+", "+q("expires_at")+") VALUES (?, ?, ?, ?, ?, ?, ?)",
		id, ar.ID, ar.Req.ClientID, ar.Subject, ar.IdentityID, now, exp)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("record the access token: %w", err)
	}
	return id, exp, nil
}

var errNoRefresh = errors.New("refresh tokens are not issued")

func (s *storage) CreateAccessAndRefreshTokens(context.Context, op.TokenRequest, string) (string, string, time.Time, error) {
	return "", "", time.Time{}, oidc.ErrUnsupportedGrantType().WithParent(errNoRefresh)
}

func (s *storage) TokenRequestByRefreshToken(context.Context, string) (op.RefreshTokenRequest, error) {
	return nil, op.ErrInvalidRefreshToken
}

func (s *storage) GetRefreshTokenInfo(context.Context, string, string) (string, string, error) {
	return "", "", op.ErrInvalidRefreshToken
}

// TerminateSession is RP-initiated logout: the user's tokens for that
// client are revoked (passbridge keeps no single sign-on session: every
// sign-in is a passkey ceremony).
func (s *storage) TerminateSession(ctx context.Context, subject, clientID string) error {
	q := s.q
	_, err := store.Exec(ctx, s.a.db, "UPDATE "+s.tokens()+" SET "+q("revoked_at")+" = ? WHERE "+q("subject")+" = ? AND "+q("client_id")+" = ? AND "+q("revoked_at")+" IS NULL",
		s.a.core.Now(), subject, clientID)
	return err
}

// RevokeToken revokes an access token by its ID (RFC 7009).
func (s *storage) RevokeToken(ctx context.Context, tokenID, _, clientID string) *oidc.Error {
	q := s.q
	if _, err := store.Exec(ctx, s.a.db, "UPDATE "+s.tokens()+" SET "+q("revoked_at")+" = ? WHERE "+q("id")+" = ? AND "+q("client_id")+" = ? AND "+q("revoked_at")+" IS NULL",
		s.a.core.Now(), tokenID, clientID); err != nil {
		return oidc.ErrServerError()
	}
	return nil
}

// signer is a signing key as zitadel/oidc uses it.
type signer struct{ k *signingKey }

func (s signer) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.ES256 }
func (s signer) Key() any                                    { return s.k.private }
func (s signer) ID() string                                  { return s.k.id }

// publicKey is a published key as zitadel/oidc lists it.
type publicKey struct{ k jose.JSONWebKey }

func (p publicKey) ID() string                         { return p.k.KeyID }
func (p publicKey) Algorithm() jose.SignatureAlgorithm { return jose.ES256 }
func (p publicKey) Use() string                        { return "sig" }
func (p publicKey) Key() any                           { return p.k.Key }

func (s *storage) SigningKey(ctx context.Context) (op.SigningKey, error) {
	k, err := s.a.keys.Signing(ctx)
	if err != nil {
		return nil, err
	}
	return signer{k}, nil
}

func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.ES256}, nil
}

func (s *storage) KeySet(ctx context.Context) ([]op.Key, error) {
	keys, err := s.a.keys.Published(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]op.Key, len(keys))
	for i, k := range keys {
		out[i] = publicKey{k}
	}
	return out, nil
}

func (s *storage) GetClientByClientID(_ context.Context, id string) (op.Client, error) {
	cl := s.a.clients[id]
	if cl == nil || len(cl.RedirectURIs) == 0 {
		return nil, errors.New("unknown client")
	}
	return &client{c: cl, a: s.a}, nil
}

// AuthorizeClientIDSecret checks a confidential client's secret in
// constant time.
func (s *storage) AuthorizeClientIDSecret(_ context.Context, id, secret string) error {
	cl := s.a.clients[id]
	if cl == nil || cl.Public || subtle.ConstantTimeCompare([]byte(cl.Secret.Reveal()), []byte(secret)) != 1 {
		return errors.New("invalid client_id or client_secret")
	}
	return nil
}

// SetUserinfoFromScopes is deprecated in zitadel/oidc: the claims come from
// SetUserinfoFromRequest.
func (s *storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

// SetUserinfoFromRequest puts the user's claims into the ID token.
func (s *storage) SetUserinfoFromRequest(ctx context.Context, ui *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	ar, ok := req.(*authRequest)
	if !ok || !ar.IdentityID.Valid {
		return errors.New("no signed-in identity for this request")
	}
	return s.userinfo(ctx, ui, ar.IdentityID.Int64, ar.Subject, scopes)
}

// SetUserinfoFromToken answers userinfo for an access token that is
// neither revoked nor expired, with the user as the directory has them now
// (a user disabled since is refused).
func (s *storage) SetUserinfoFromToken(ctx context.Context, ui *oidc.UserInfo, tokenID, subject, _ string) error {
	var row struct {
		IdentityID sql.NullInt64 `db:"identity_id"`
	}
	q := s.q
	err := store.Get(ctx, s.a.db, &row, "SELECT "+q("identity_id")+" FROM "+s.tokens()+" WHERE "+q("id")+" = ? AND "+q("subject")+" = ? AND "+q("revoked_at")+" IS NULL AND "+q("expires_at")+" > ?",
		tokenID, subject, s.a.core.Now())
	if err != nil || !row.IdentityID.Valid {
		return errors.New("the access token is revoked, expired or unknown")
	}
	it, err := s.a.core.IdentityByID(ctx, row.IdentityID.Int64)
	if err != nil {
		return err
	}
	if it == nil || it.Refusal() != "" {
		return errors.New("the user may no longer sign in")
	}
	return s.userinfo(ctx, ui, row.IdentityID.Int64, subject, []string{oidc.ScopeOpenID, oidc.ScopeProfile, oidc.ScopeEmail})
}

func (s *storage) userinfo(ctx context.Context, ui *oidc.UserInfo, identityID int64, subject string, scopes []string) error {
	it, err := s.a.core.IdentityByID(ctx, identityID)
	if err != nil {
		return err
	}
	if it == nil {
		return errors.New("the identity is gone")
	}
	ui.Subject = subject
	c := claims(it)
	if slices.Contains(scopes, oidc.ScopeProfile) {
		ui.Name = it.Name()
		ui.PreferredUsername = it.Username
		ui.AppendClaims("user_key", c["user_key"])
		ui.AppendClaims("directory_id", c["directory_id"])
	}
	if slices.Contains(scopes, oidc.ScopeEmail) && it.Email.String != "" {
		ui.Email = it.Email.String
	}
	return nil
}

func (s *storage) SetIntrospectionFromToken(ctx context.Context, r *oidc.IntrospectionResponse, tokenID, subject, clientID string) error {
	var ui oidc.UserInfo
	if err := s.SetUserinfoFromToken(ctx, &ui, tokenID, subject, ""); err != nil {
		return err
	}
	r.SetUserInfo(&ui)
	r.Active = true
	r.ClientID = clientID
	r.Audience = []string{clientID}
	return nil
}

func (s *storage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}

func (s *storage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errors.New("private_key_jwt is not supported")
}

func (s *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errors.New("the JWT profile grant is not supported")
}

func (s *storage) Health(ctx context.Context) error { return s.a.db.PingContext(ctx) }

// client is an oidc.clients entry as zitadel/oidc sees it.
type client struct {
	c *config.Client
	a *Apps
}

func (c *client) GetID() string                    { return c.c.ID }
func (c *client) RedirectURIs() []string           { return c.c.RedirectURIs }
func (c *client) PostLogoutRedirectURIs() []string { return c.c.PostLogoutRedirectURIs }
func (c *client) ApplicationType() op.ApplicationType {
	if c.c.Public {
		return op.ApplicationTypeUserAgent
	}
	return op.ApplicationTypeWeb
}
func (c *client) AuthMethod() oidc.AuthMethod {
	if c.c.Public {
		return oidc.AuthMethodNone
	}
	return oidc.AuthMethodBasic
}
func (c *client) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}
func (c *client) GrantTypes() []oidc.GrantType        { return []oidc.GrantType{oidc.GrantTypeCode} }
func (c *client) LoginURL(id string) string           { return loginPath + "?id=" + id }
func (c *client) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeJWT }
func (c *client) IDTokenLifetime() time.Duration      { return c.a.cfg.OIDC.TokenLifetime.D() }

// DevMode lets http:// redirect URIs through, which config validation
// allows only on localhost and loopback addresses.
func (c *client) DevMode() bool {
	for _, r := range c.c.RedirectURIs {
		if strings.HasPrefix(r, "http://") {
			return true
		}
	}
	return false
}
func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *client) IsScopeAllowed(string) bool { return false }

// IDTokenUserinfoClaimsAssertion: the ID token carries the profile and
// email claims (the users row key with them), so that an application needs
// no userinfo call.
func (c *client) IDTokenUserinfoClaimsAssertion() bool { return true }
func (c *client) ClockSkew() time.Duration             { return 0 }
