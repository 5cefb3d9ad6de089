package enroll

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"
	"github.com/labstack/echo/v4"

	"github.com/passbridge/passbridge/enroll/aaguid"
	"github.com/passbridge/passbridge/store"
)

// maxNameLen bounds a passkey's name (the column holds 255 bytes).
const maxNameLen = 100

func (p *Portal) passkeyViews(creds []*credential, s *session) []passkeyView {
	out := make([]passkeyView, 0, len(creds))
	for _, c := range creds {
		v := passkeyView{ID: c.ID, Name: c.Name, Provider: aaguid.Name(c.AAGUID), Created: c.CreatedAt,
			Synced: c.BackupState, Syncable: c.BackupEligible && !c.BackupState}
		if c.LastUsedAt.Valid {
			t := c.LastUsedAt.Time
			v.LastUsed = &t
		}
		if s != nil && s.data.CredentialID != "" && s.data.CredentialID == base64.RawURLEncoding.EncodeToString(c.CredentialID) {
			v.Current = true
		}
		out = append(out, v)
	}
	return out
}

// cleanName checks a passkey name typed by the user: trimmed, not empty,
// at most maxNameLen characters, no control characters.
func cleanName(name string) (string, *userError) {
	name = strings.TrimSpace(name)
	switch {
	case name == "":
		return "", &userError{Status: http.StatusBadRequest, Code: "name", Message: "Give the passkey a name, such as “Work laptop” or “YubiKey on my keyring”."}
	case !utf8.ValidString(name) || strings.IndexFunc(name, unicode.IsControl) >= 0:
		return "", &userError{Status: http.StatusBadRequest, Code: "name", Message: "The name has characters that are not allowed."}
	case utf8.RuneCountInString(name) > maxNameLen:
		return "", &userError{Status: http.StatusBadRequest, Code: "name", Message: "The name is too long: at most " + strconv.Itoa(maxNameLen) + " characters."}
	}
	return name, nil
}

// ownPasskey finds the signed-in user's active passkey of the URL's :id.
func (p *Portal) ownPasskey(c echo.Context, s *session) (*credential, []*credential, error) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id <= 0 {
		return nil, nil, &userError{Status: http.StatusNotFound, Code: "not_found", Message: "There is no such passkey."}
	}
	creds, err := p.data.activeCredentials(c.Request().Context(), s.identity.UserKey)
	if err != nil {
		return nil, nil, err
	}
	for _, cr := range creds {
		if cr.ID == id {
			return cr, creds, nil
		}
	}
	return nil, nil, &userError{Status: http.StatusNotFound, Code: "not_found", Message: "There is no such passkey (it may have been deleted already)."}
}

func (p *Portal) rename(c echo.Context) error {
	s := currentSession(c)
	cr, _, err := p.ownPasskey(c, s)
	if err != nil {
		return err
	}
	name, uerr := cleanName(c.FormValue("name"))
	if uerr != nil {
		return p.renderHome(c, s, uerr.Status, pageData{Error: uerr.Message})
	}
	ctx := c.Request().Context()
	q := p.data.q
	if _, err := store.Exec(ctx, p.data.db, "UPDATE "+p.data.n.Credentials+" SET "+q("name")+" = ? WHERE "+q("id")+" = ? AND "+q("user_key")+" = ? AND "+q("revoked_at")+" IS NULL",
		name, cr.ID, s.identity.UserKey); err != nil {
		return err
	}
	p.audit(c, event{Event: evRenamed, Success: true, Target: s.identity.Username, Detail: map[string]any{"passkey_id": cr.ID, "from": cr.Name, "to": name}})
	return c.Redirect(http.StatusSeeOther, "/?done=renamed")
}

// delete revokes one of the user's passkeys. The last one goes only after a
// confirmation page that says what happens next.
func (p *Portal) delete(c echo.Context) error {
	s := currentSession(c)
	cr, all, err := p.ownPasskey(c, s)
	if err != nil {
		return err
	}
	if len(all) == 1 && c.FormValue("confirm") != "yes" {
		v := p.passkeyViews([]*credential{cr}, s)[0]
		return p.render(c, http.StatusOK, "confirm_delete", pageData{Title: "Delete your last passkey?", Passkey: &v})
	}
	ctx := c.Request().Context()
	if err := p.data.revoke(ctx, s.identity.UserKey, cr.ID, "deleted by the user", s.id); err != nil {
		return err
	}
	p.audit(c, event{Event: evDeleted, Success: true, Target: s.identity.Username, Detail: map[string]any{"passkey_id": cr.ID, "name": cr.Name, "last": len(all) == 1}})
	return c.Redirect(http.StatusSeeOther, "/?done=deleted")
}

// revoke marks a passkey revoked (never deleted: the audit trail and the
// application keep seeing what existed), updates the users row's passkey
// state, and ends the sessions that were signed in with it, except keep
// (the session asking, which stays signed in).
func (s *data) revoke(ctx context.Context, userKey any, id int64, reason, keep string) error {
	q := s.q
	return s.db.InTx(ctx, func(tx *sqlx.Tx) error {
		var credID []byte
		if err := store.Get(ctx, tx, &credID, "SELECT "+q("credential_id")+" FROM "+s.n.Credentials+" WHERE "+q("id")+" = ? AND "+q("user_key")+" = ?"+s.d.ForUpdate(), id, userKey); err != nil {
			return err
		}
		if _, err := store.Exec(ctx, tx, "UPDATE "+s.n.Credentials+" SET "+q("revoked_at")+" = ?, "+q("revoked_reason")+" = ? WHERE "+q("id")+" = ? AND "+q("revoked_at")+" IS NULL",
			s.now(), reason, id); err != nil {
			return err
		}
		if err := s.setPasskeyState(ctx, tx, userKey); err != nil {
			return err
		}
		return s.endSessionsOf(ctx, tx, credID, keep)
	})
}

// endSessionsOf deletes the sessions signed in with a passkey.
func (s *data) endSessionsOf(ctx context.Context, tx store.Querier, credID []byte, keep string) error {
	q := s.q
	want := base64.RawURLEncoding.EncodeToString(credID)
	var rows []struct {
		ID   string `db:"id"`
		Data string `db:"data"`
	}
	// The sessions of the passkey's identities; few rows per user.
	err := store.Select(ctx, tx, &rows, "SELECT "+s.cols("se", "id", "data")+" FROM "+s.n.Sessions+" se JOIN "+s.n.Credentials+" c ON c."+q("identity_id")+" = se."+q("identity_id")+
		" WHERE c."+q("credential_id")+" = ?", credID)
	if err != nil {
		return err
	}
	for _, r := range rows {
		var sd sessionData
		if r.ID == keep || json.Unmarshal([]byte(r.Data), &sd) != nil || !bytes.Equal([]byte(sd.CredentialID), []byte(want)) {
			continue
		}
		if _, err := store.Exec(ctx, tx, "DELETE FROM "+s.n.Sessions+" WHERE "+q("id")+" = ?", r.ID); err != nil {
			return err
		}
	}
	return nil
}

// revokeOthers revokes, inside tx, every active passkey of a users row but
// keepID, and ends the sessions made with them (except the session keep).
func (s *data) revokeOthers(ctx context.Context, tx store.Querier, userKey any, keepID int64, reason, keepSession string) (int, error) {
	q := s.q
	var ids [][]byte
	if err := store.Select(ctx, tx, &ids, "SELECT "+q("credential_id")+" FROM "+s.n.Credentials+" WHERE "+q("user_key")+" = ? AND "+q("revoked_at")+" IS NULL AND "+q("id")+" <> ?", userKey, keepID); err != nil {
		return 0, err
	}
	if len(ids) == 0 {
		return 0, nil
	}
	if _, err := store.Exec(ctx, tx, "UPDATE "+s.n.Credentials+" SET "+q("revoked_at")+" = ?, "+q("revoked_reason")+" = ? WHERE "+q("user_key")+" = ? AND "+q("revoked_at")+" IS NULL AND "+q("id")+" <> ?",
		s.now(), reason, userKey, keepID); err != nil {
		return 0, err
	}
	for _, id := range ids {
		if err := s.endSessionsOf(ctx, tx, id, keepSession); err != nil {
			return 0, err
		}
	}
	return len(ids), nil
}
