package signin

import (
	"context"
	"fmt"

	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// MethodPassword is the sign-in method of a directory password, in
// sessions and the audit trail.
const MethodPassword = "password"

// PasswordPolicy reads the users row's password fallback policy
// (users.<prefix>password_policy, which the console, a campaign's deadline
// and the application itself write); "" for NULL.
func (c *Core) PasswordPolicy(ctx context.Context, userKey any) (string, error) {
	var v *string
	if err := store.Get(ctx, c.db.Reader(), &v, "SELECT "+c.n.PasswordPolicy+" FROM "+c.n.Users+" WHERE "+c.n.UserKey+" = ?", userKey); err != nil {
		return "", fmt.Errorf("read the password policy: %w", err)
	}
	if v == nil {
		return "", nil
	}
	return *v, nil
}

// PasswordAllowed says whether a password fallback policy lets its user sign
// in with the directory password, given how many active passkeys they
// have: NULL and allowed do, refused_with_passkey until the first passkey,
// passkey_required never; nor does a value passbridge does not know (an
// application's own spelling is refused rather than guessed).
func PasswordAllowed(policy string, passkeys int) bool {
	switch policy {
	case "", schema.PasswordAllowed:
		return true
	case schema.PasswordRefusedWithPasskey:
		return passkeys == 0
	}
	return false
}
