package enroll

import (
	"github.com/passbridge/passbridge/campaign"
	"github.com/passbridge/passbridge/signin"
)

// The WebAuthn ceremonies are the sign-in core's (package signin): stored
// whole in passbridge_ceremonies, claimed exactly once across replicas.

// Ceremony kinds the portal runs.
const (
	kindRegistration = signin.KindRegistration
	kindLogin        = signin.KindLogin
	// kindUpgrade is a registration by the automatic passkey upgrade
	// after a password sign-in (conditional creation): its own kind, so
	// that the figures count it as its own method and a password manager
	// that declines silently is not counted as an abandonment.
	kindUpgrade = campaign.KindUpgrade
)

// Ceremony results.
const (
	resultSucceeded = signin.ResultSucceeded
	resultFailed    = signin.ResultFailed
	resultRefused   = signin.ResultRefused
)

// ceremony is a claimed ceremony: what begin stored.
type ceremony = signin.Ceremony

// errCeremonyGone is what the browser hears about a ceremony that is
// unknown, expired, of another kind or already finished.
var errCeremonyGone = signin.ErrCeremonyGone
