package signin

import (
	"testing"

	"github.com/passbridge/passbridge/schema"
)

// TestPasswordAllowed: each password_policy value, with and without a
// passkey; a value passbridge does not know refuses.
func TestPasswordAllowed(t *testing.T) {
	for _, tc := range []struct {
		policy   string
		passkeys int
		want     bool
	}{
		{"", 0, true}, {"", 2, true},
		{schema.PasswordAllowed, 0, true}, {schema.PasswordAllowed, 1, true},
		{schema.PasswordRefusedWithPasskey, 0, true}, {schema.PasswordRefusedWithPasskey, 1, false},
		{schema.PasswordPasskeyRequired, 0, false}, {schema.PasswordPasskeyRequired, 1, false},
		{"Allowed", 0, false}, {"never", 0, false},
	} {
		if got := PasswordAllowed(tc.policy, tc.passkeys); got != tc.want {
			t.Errorf("PasswordAllowed(%q, %d) = %v, want %v", tc.policy, tc.passkeys, got, tc.want)
		}
	}
}
