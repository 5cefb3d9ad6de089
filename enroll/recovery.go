package enroll

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"

	"github.com/passbridge/passbridge/enroll/mail"
	"github.com/passbridge/passbridge/ratelimit"
	"github.com/passbridge/passbridge/store"
)

// Recovery is how an employee who lost their passkeys gets a new one, each
// path on or off in portal.recovery:
//
//   - email: the directory password, then a one-time code mailed to the
//     directory's mail address;
//   - totp: the directory password and a code of the legacy TOTP secret the
//     users table already holds (read only; a code is accepted once);
//   - link: a recovery link from IT (passbridge enroll link --recovery).
//
// A recovery signs the user in with a recovery session, in which they add a
// passkey; that passkey is mailed about and, with portal.recovery.revoke_old,
// revokes the old ones. Every attempt is rate-limited and audited, and no
// answer tells whether a username exists.

// Recovery paths, as named in sessions and audit events (recovery.<path>).
const (
	recoveryEmail = "email"
	recoveryTOTP  = "totp"
	recoveryLink  = "link"
)

// Audit events of recovery.
const (
	evRecovery       = "recovery."          // + path: a recovery succeeded (a recovery session)
	evRecoveryFailed = "recovery.failed"    // detail.path, detail.reason
	evRecoveryLimit  = "recovery.limited"   // detail.path
	evCodeSent       = "recovery.code_sent" // the email code was sent
	evMailFailed     = "mail.failed"        // detail.purpose
)

// recoveryView says which recovery paths the pages offer.
type recoveryView struct {
	Email, TOTP, Link bool
	// Destination is the masked address the code went to.
	Destination string
}

func (p *Portal) recoveryPaths() *recoveryView {
	r := p.cfg.Portal.Recovery
	v := &recoveryView{Email: r.EmailCode && p.mail != nil, TOTP: r.TOTP, Link: r.Link}
	if !v.Email && !v.TOTP && !v.Link {
		return nil
	}
	return v
}

// recoverCookie carries an email recovery between its two steps.
const recoverCookie = "pb_recovery"

func (p *Portal) showRecover(c echo.Context) error {
	v := p.recoveryPaths()
	if v == nil || (!v.Email && !v.TOTP) {
		return &userError{Status: http.StatusNotFound, Code: "not_found", Message: "Self-service recovery is off here: ask IT for a recovery link."}
	}
	return p.render(c, http.StatusOK, "recover", pageData{Title: "Lost your passkey?", Recovery: v})
}

// errRecoveryFailed is the one answer to a failed recovery step, whatever
// failed: the username, the password or the code.
var errRecoveryFailed = &userError{Status: http.StatusUnauthorized, Code: "recovery_failed",
	Message: "That did not work. Check your username, password and code, and try again."}

// recoveryLimits counts one recovery attempt against the client address
// (four times portal.recovery.per_user per window; an IPv6 client by its
// /64), resolves the username (lookupAccount) and counts the attempt
// against the directory account it names (portal.recovery.per_user in any
// window): every spelling of one account shares one budget.
func (p *Portal) recoveryLimits(c echo.Context, path, username, password string) (*account, *userError) {
	ctx := c.Request().Context()
	r := p.cfg.Portal.Recovery
	limited := func(name string) (*account, *userError) {
		p.audit(c, event{Event: evRecoveryLimit, Target: name, Detail: map[string]any{"path": path}})
		return nil, &userError{Status: http.StatusTooManyRequests, Code: "limited",
			Message: "Too many recovery attempts. Wait " + humanDuration(r.Window.D()) + " and try again, or ask IT for a recovery link."}
	}
	ok, err := p.limits.Hit(ctx, "recovery:"+ratelimit.Address(c.RealIP()), 4*r.PerUser, r.Window.D())
	if err != nil {
		p.log.Error("recovery rate limit", "err", err)
		return nil, errInternal
	}
	if !ok {
		return limited(username)
	}
	a, ue := p.lookupAccount(c, username, password, methodRecovery)
	if ue != nil {
		return nil, ue
	}
	if _, ok, _, err = p.limits.Take(ctx, "recovery:"+a.key(), r.PerUser, r.Window.D()); err != nil {
		p.log.Error("recovery rate limit", "err", err)
		return nil, errInternal
	}
	if !ok {
		return limited(a.name())
	}
	return a, nil
}

// recoverFail renders the recovery page with a message and audits why.
func (p *Portal) recoverFail(c echo.Context, path, username, reason string, ue *userError) error {
	if ue != errWrongPassword && ue.Code != "limited" {
		p.audit(c, event{Event: evRecoveryFailed, Target: username, Detail: map[string]any{"path": path, "reason": reason}})
	}
	if ue == errWrongPassword {
		ue = errRecoveryFailed
	}
	return p.render(c, ue.Status, "recover", pageData{Title: "Lost your passkey?", Error: ue.Message, Username: username, Recovery: p.recoveryPaths()})
}

// recoverEmail is step one of the email path: the directory password, then
// a code mailed to the directory's mail address.
func (p *Portal) recoverEmail(c echo.Context) error {
	if v := p.recoveryPaths(); v == nil || !v.Email {
		return echo.ErrNotFound
	}
	ctx := c.Request().Context()
	username := strings.TrimSpace(c.FormValue("username"))
	password := c.FormValue("password")
	a, ue := p.recoveryLimits(c, recoveryEmail, username, password)
	if ue != nil {
		return p.recoverFail(c, recoveryEmail, username, ue.Code, ue)
	}
	found, ue := p.verifyPassword(c, a, password, methodRecovery)
	if ue != nil {
		return p.recoverFail(c, recoveryEmail, username, ue.Code, ue)
	}
	it, err := p.data.identityByDirectoryID(ctx, found.DirectoryID)
	if err != nil {
		return err
	}
	if it == nil {
		return p.recoverFail(c, recoveryEmail, username, "not synced", &userError{Status: http.StatusForbidden, Code: "refused",
			Message: "Your account has not reached the passkey portal yet. Try again after the next directory sync, or ask IT."})
	}
	if why := it.Refusal(); why != "" {
		return p.recoverFail(c, recoveryEmail, username, it.State+"/"+it.LinkState, &userError{Status: http.StatusForbidden, Code: "refused", Message: why})
	}
	to := found.Email
	if to == "" {
		to = it.Email.String
	}
	if to == "" {
		return p.recoverFail(c, recoveryEmail, username, "no email", &userError{Status: http.StatusForbidden, Code: "no_email",
			Message: "The directory has no email address for your account, so no code can be sent. Use another way, or ask IT for a recovery link."})
	}
	code := sixDigits()
	pending, _ := newSecret()
	life := p.cfg.Portal.Recovery.CodeLifetime.D()
	now := p.data.now()
	q := p.data.q
	// A new code replaces the user's earlier ones.
	if _, err := store.Exec(ctx, p.data.db, "UPDATE "+p.data.n.Tokens+" SET "+q("expires_at")+" = ? WHERE "+q("identity_id")+" = ? AND "+q("kind")+" = ? AND "+q("used_at")+" IS NULL AND "+q("expires_at")+" > ?",
		now, it.ID, kindEmailCode, now); err != nil {
		return err
	}
	if _, err := store.Exec(ctx, p.data.db, "INSERT INTO "+p.data.n.Tokens+" ("+p.data.cols("", "token_hash", "kind", "identity_id", "created_by", "created_at", "expires_at")+") VALUES (?, ?, ?, ?, ?, ?)",
		hashSecret(pending+":"+code), kindEmailCode, it.ID, "recovery", now, now.Add(life)); err != nil {
		return err
	}
	mctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = p.mail.Send(mctx, mail.Message{To: to, Subject: "Your " + p.cfg.Portal.RPName + " passkey recovery code: " + code,
		Text: fmt.Sprintf("Hello %s,\n\nyour code to recover access to the %s passkey portal is\n\n    %s\n\nIt works once, for %s. If you did not ask for it, someone knows your password: change it now and tell IT.\n\nSent by %s.\n",
			it.Name(), p.cfg.Portal.RPName, code, humanDuration(life), p.baseURL)})
	if err != nil {
		p.log.Error("cannot send the recovery code", "to", to, "err", err)
		// Nobody has this code: take it back.
		if _, xerr := store.Exec(ctx, p.data.db, "DELETE FROM "+p.data.n.Tokens+" WHERE "+q("token_hash")+" = ?", hashSecret(pending+":"+code)); xerr != nil {
			p.log.Warn("cannot delete the unsent recovery code", "err", xerr)
		}
		p.audit(c, event{Event: evMailFailed, Target: it.Username, Detail: map[string]any{"purpose": "recovery code"}})
		return p.recoverFail(c, recoveryEmail, username, "mail failed", &userError{Status: http.StatusServiceUnavailable, Code: "mail",
			Message: "The code could not be sent right now. Try again in a few minutes, or ask IT for a recovery link."})
	}
	p.audit(c, event{Event: evCodeSent, Success: true, Target: it.Username})
	ck := &http.Cookie{Name: recoverCookie, Value: pending, Path: "/recover", HttpOnly: true, Secure: p.secure, SameSite: http.SameSiteStrictMode, Expires: now.Add(life)}
	c.SetCookie(ck)
	return p.render(c, http.StatusOK, "recover_code", pageData{Title: "Enter your code", Recovery: &recoveryView{Destination: maskEmail(to)}})
}

// kindEmailCode is the tokens.kind of an emailed recovery code. The row is
// keyed by SHA-256(pending secret ":" code): neither the code nor the
// browser's secret alone finds it.
const kindEmailCode = "email_code"

// codeAttempts is how many codes one pending recovery may try: with six
// digits, five tries leave a 1 in 200,000 chance.
const codeAttempts = 5

// recoverCode is step two of the email path.
func (p *Portal) recoverCode(c echo.Context) error {
	if v := p.recoveryPaths(); v == nil || !v.Email {
		return echo.ErrNotFound
	}
	ctx := c.Request().Context()
	ck, err := c.Cookie(recoverCookie)
	if err != nil || !validSecret(ck.Value) {
		return p.recoverFail(c, recoveryEmail, "", "no pending recovery", &userError{Status: http.StatusBadRequest, Code: "expired",
			Message: "This recovery has expired. Start again."})
	}
	again := func(ue *userError) error {
		return p.render(c, ue.Status, "recover_code", pageData{Title: "Enter your code", Error: ue.Message, Recovery: &recoveryView{}})
	}
	life := p.cfg.Portal.Recovery.CodeLifetime.D()
	if _, ok, _, err := p.limits.Take(ctx, "code:"+hashSecret(ck.Value)[:32], codeAttempts, life); err != nil {
		return err
	} else if !ok {
		return again(&userError{Status: http.StatusTooManyRequests, Code: "limited", Message: "Too many wrong codes. Start the recovery again."})
	}
	code := strings.Join(strings.Fields(c.FormValue("code")), "")
	if len(code) != 6 {
		return again(&userError{Status: http.StatusBadRequest, Code: "code", Message: "The code has six digits."})
	}
	l, err := p.data.claimToken(ctx, hashSecret(ck.Value+":"+code), kindEmailCode)
	if err != nil {
		return err
	}
	if l == nil {
		p.audit(c, event{Event: evRecoveryFailed, Detail: map[string]any{"path": recoveryEmail, "reason": "wrong or expired code"}})
		return again(&userError{Status: http.StatusUnauthorized, Code: "code", Message: "That code is not right, or has expired."})
	}
	c.SetCookie(&http.Cookie{Name: recoverCookie, Value: "", Path: "/recover", MaxAge: -1, HttpOnly: true, Secure: p.secure})
	it, err := p.data.identityByID(ctx, l.IdentityID)
	if err != nil {
		return err
	}
	if it == nil {
		return errLinkGone
	}
	return p.recovered(c, it, recoveryEmail)
}

// recovered opens the recovery session.
func (p *Portal) recovered(c echo.Context, it *identity, path string) error {
	p.audit(c, event{Event: evRecovery + path, Success: true, Actor: it.Username, Target: it.Username})
	return p.openSession(c, it, sessionData{Method: methodRecovery, Recovery: path}, "/?done=recovered")
}

// recoverTOTP is the TOTP path: the directory password and a code of the
// users row's legacy TOTP secret.
func (p *Portal) recoverTOTP(c echo.Context) error {
	if v := p.recoveryPaths(); v == nil || !v.TOTP {
		return echo.ErrNotFound
	}
	ctx := c.Request().Context()
	username := strings.TrimSpace(c.FormValue("username"))
	code := strings.Join(strings.Fields(c.FormValue("code")), "")
	password := c.FormValue("password")
	a, ue := p.recoveryLimits(c, recoveryTOTP, username, password)
	if ue != nil {
		return p.recoverFail(c, recoveryTOTP, username, ue.Code, ue)
	}
	if len(code) != 6 || strings.Trim(code, "0123456789") != "" {
		return p.recoverFail(c, recoveryTOTP, username, "malformed code", &userError{Status: http.StatusBadRequest, Code: "code", Message: "The code of your authenticator app has six digits."})
	}
	found, ue := p.verifyPassword(c, a, password, methodRecovery)
	if ue != nil {
		return p.recoverFail(c, recoveryTOTP, username, ue.Code, ue)
	}
	it, err := p.data.identityByDirectoryID(ctx, found.DirectoryID)
	if err != nil {
		return err
	}
	if it == nil || it.Refusal() != "" {
		return p.recoverFail(c, recoveryTOTP, username, "refused", errRecoveryFailed)
	}
	secret, err := p.data.legacyTOTP(ctx, it.UserKey)
	if err != nil {
		return err
	}
	counter, ok := matchTOTP(secret, code, time.Now())
	if !ok {
		return p.recoverFail(c, recoveryTOTP, username, "wrong code", errRecoveryFailed)
	}
	fresh, err := p.data.useTOTPCounter(ctx, it.UserKey, counter)
	if err != nil {
		return err
	}
	if !fresh {
		return p.recoverFail(c, recoveryTOTP, username, "replayed code", &userError{Status: http.StatusUnauthorized, Code: "replay",
			Message: "That code was already used. Wait for your app to show the next one."})
	}
	return p.recovered(c, it, recoveryTOTP)
}

// totpOpts are the usual authenticator app settings (RFC 6238 defaults).
var totpOpts = hotp.ValidateOpts{Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}

// matchTOTP checks code against the secret for the 30-second step of now
// and one on each side (clock skew), and returns the step it matched.
// An empty or broken secret matches nothing (in similar time).
func matchTOTP(secret, code string, now time.Time) (uint64, bool) {
	if secret == "" {
		secret = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
		code = "x" + code // never matches
	}
	step := uint64(now.Unix() / 30)
	var hit uint64
	ok := false
	for _, s := range []uint64{step - 1, step, step + 1} {
		want, err := hotp.GenerateCodeCustom(strings.ToUpper(strings.ReplaceAll(secret, " ", "")), s, totpOpts)
		if err != nil {
			return 0, false
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 {
			hit, ok = s, true
		}
	}
	return hit, ok
}

// legacyTOTP reads the users row's TOTP secret (users_table.totp); "" when
// the row has none.
func (s *data) legacyTOTP(ctx context.Context, userKey any) (string, error) {
	if s.n.UserTOTP == "" {
		return "", nil
	}
	var secret *string
	err := store.Get(ctx, s.db, &secret, "SELECT "+s.n.UserTOTP+" FROM "+s.n.Users+" WHERE "+s.n.UserKey+" = ?", userKey)
	if err != nil || secret == nil {
		return "", err
	}
	return strings.TrimSpace(*secret), nil
}

// useTOTPCounter records that a TOTP step was used for a users row and
// reports whether it is newer than every step used before (RFC 6238 5.2:
// a code is accepted once, and so is no older one). The last step lives in
// passbridge_rate_limits ("totp:<key>", hits = the step), updated with one
// conditional statement, so two replicas cannot both accept one code.
func (s *data) useTOTPCounter(ctx context.Context, userKey any, step uint64) (bool, error) {
	bucket := clip(fmt.Sprintf("totp:%v", userKey), 255)
	q := s.q
	for range 2 {
		res, err := store.Exec(ctx, s.db, "UPDATE "+s.n.RateLimits+" SET "+q("hits")+" = ?, "+q("window_start")+" = ? WHERE "+q("bucket")+" = ? AND "+q("hits")+" < ?",
			int64(step), s.now(), bucket, int64(step))
		if err != nil {
			return false, err
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return true, nil
		}
		var have int
		if err := store.Get(ctx, s.db, &have, "SELECT COUNT(*) FROM "+s.n.RateLimits+" WHERE "+q("bucket")+" = ?", bucket); err != nil {
			return false, err
		}
		if have == 1 {
			return false, nil // a step as new or newer was used
		}
		_, err = store.Exec(ctx, s.db, "INSERT INTO "+s.n.RateLimits+" ("+s.cols("", "bucket", "window_start", "hits")+") VALUES (?, ?, ?)", bucket, s.now(), int64(step))
		if err == nil {
			return true, nil
		}
		if !store.IsUniqueViolation(err) {
			return false, err
		}
	}
	return false, nil
}

// claimToken uses up an unexpired token of kind by its hash.
func (s *data) claimToken(ctx context.Context, hash, kind string) (*link, error) {
	var l link
	err := store.Get(ctx, s.db, &l, "SELECT "+s.cols("", "id", "kind", "identity_id", "expires_at")+" FROM "+s.n.Tokens+
		" WHERE "+s.q("token_hash")+" = ? AND "+s.q("kind")+" = ? AND "+s.q("used_at")+" IS NULL AND "+s.q("expires_at")+" > ?", hash, kind, s.now())
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	now := s.now()
	res, err := store.Exec(ctx, s.db, "UPDATE "+s.n.Tokens+" SET "+s.q("used_at")+" = ? WHERE "+s.q("id")+" = ? AND "+s.q("used_at")+" IS NULL", now, l.ID)
	if err != nil {
		return nil, err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return nil, nil
	}
	return &l, nil
}

// sixDigits is a uniformly random six-digit code.
func sixDigits() string {
	for {
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			panic(err)
		}
		n := binary.BigEndian.Uint32(b[:])
		if n < 4_294_000_000 { // a multiple of 10^6: no modulo bias
			return fmt.Sprintf("%06d", n%1_000_000)
		}
	}
}

// maskEmail shows enough of an address to recognize it: z***@corp.example.
func maskEmail(a string) string {
	local, domain, ok := strings.Cut(a, "@")
	if !ok || local == "" {
		return "your address"
	}
	r := []rune(local)
	return string(r[0]) + "***@" + domain
}

// notifyPasskeyAdded mails the user that a passkey was added to their
// account; after a recovery it says so. Best effort: the passkey is stored
// already, a mail failure is logged and audited.
func (p *Portal) notifyPasskeyAdded(c echo.Context, it *identity, s *session, name string, revoked int) {
	how := "after you signed in to the passkey portal"
	if s.data.Method == methodRecovery {
		how = "through a recovery (" + map[string]string{recoveryEmail: "password and emailed code", recoveryTOTP: "password and authenticator app code", recoveryLink: "a recovery link from IT"}[s.data.Recovery] + ")"
	}
	p.mailPasskeyAdded(c, it, name, how, revoked)
}

// mailPasskeyAdded sends the notice of a passkey added how (the end of
// the sentence "a passkey was added to your account ...").
func (p *Portal) mailPasskeyAdded(c echo.Context, it *identity, name, how string, revoked int) {
	if p.mail == nil {
		return
	}
	to := it.Email.String
	if to == "" {
		return
	}
	text := fmt.Sprintf("Hello %s,\n\na passkey, %q, was added to your account %s on %s, from %s.\n", it.Name(), name, how, p.data.now().Format("2 Jan 2006 15:04 UTC"), c.RealIP())
	if revoked > 0 {
		text += fmt.Sprintf("\nYour %d earlier passkey(s) were revoked and no longer sign you in.\n", revoked)
	}
	text += "\nIf this was not you, tell IT at once: someone may have your password.\n\n" + p.baseURL + "\n"
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request().Context()), 30*time.Second)
	defer cancel()
	if err := p.mail.Send(ctx, mail.Message{To: to, Subject: "A passkey was added to your " + p.cfg.Portal.RPName + " account", Text: text}); err != nil {
		p.log.Error("cannot send the passkey-added notice", "to", to, "err", err)
		p.audit(c, event{Event: evMailFailed, Target: it.Username, Detail: map[string]any{"purpose": "passkey added"}})
	}
}
