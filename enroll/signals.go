package enroll

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/passbridge/passbridge/signin"
	"github.com/passbridge/passbridge/store"
)

// The WebAuthn Signals API keeps the passkeys a browser's password manager
// holds in step with the portal: on the passkeys page the script calls
// PublicKeyCredential.signalAllAcceptedCredentials (the passkeys that
// still work: one deleted by its owner, revoked by IT or by a recovery's
// revoke_old disappears) and signalCurrentUserDetails (the name and
// display name as the directory has them now: a rename shows), and after a
// passkey sign-in refused because the passkey is unknown or revoked,
// signalUnknownCredential. A passkey refused because its account is
// disabled or deleted in the directory is not signalled: the password
// manager would delete it, and a re-enabled (or restored) account gets
// its passkeys back. Each call is feature-detected in the script; browsers
// without the API see nothing.

// signalsView is what the page's script tells the password manager
// through the WebAuthn Signals API: the passkeys the portal accepts for
// this user (any other it holds for the user handle is gone: deleted,
// revoked by IT or a recovery) and the user's current names.
type signalsView struct {
	RPID, UserID, Credentials, Name, DisplayName string
}

// signals is nil for a user who never had a passkey here: the password
// manager holds nothing of theirs to correct.
func (p *Portal) signals(ctx context.Context, it *identity, active []*credential) (*signalsView, error) {
	var handles [][]byte
	if err := store.Select(ctx, p.data.db, &handles, "SELECT "+p.data.q("user_handle")+" FROM "+p.data.n.Credentials+" WHERE "+p.data.q("user_key")+" = ? ORDER BY "+p.data.q("id")+" LIMIT 1", it.UserKey); err != nil {
		return nil, fmt.Errorf("read the user handle: %w", err)
	}
	if len(handles) == 0 || len(handles[0]) == 0 {
		return nil, nil
	}
	ids := make([]string, 0, len(active))
	for _, c := range active {
		ids = append(ids, base64.RawURLEncoding.EncodeToString(c.CredentialID))
	}
	return &signalsView{RPID: p.cfg.Portal.RPID, UserID: base64.RawURLEncoding.EncodeToString(handles[0]),
		Credentials: strings.Join(ids, ","), Name: signin.AccountName(it), DisplayName: it.Name()}, nil
}
