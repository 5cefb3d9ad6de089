package enroll

import (
	"context"
	"errors"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/passbridge/passbridge/directory"
)

// adminCache answers "is this directory entry in portal.admin_group?" for
// every sign-in (password, link, recovery, passkey) and every admin request
// of a directory admin, asking the directory at most once per entry per
// portal.admin_group_cache: a busy portal's passkey sign-ins cost no LDAP
// round trip, and someone removed from the group loses the console within
// that time. Answers are per process (each replica asks for itself);
// concurrent questions about one entry share one lookup; failures are not
// remembered, so a directory that comes back is asked at once.
type adminCache struct {
	dir Directory
	ttl func() time.Duration
	now func() time.Time

	flight singleflight.Group
	mu     sync.Mutex
	known  map[adminKey]adminAnswer
}

type adminKey struct{ group, dn string }

type adminAnswer struct {
	member bool
	at     time.Time
}

// maxAdminAnswers bounds the cache: past it, expired answers are dropped,
// and if that is not enough, all of them (the next questions ask again).
const maxAdminAnswers = 10000

func newAdminCache(dir Directory, ttl func() time.Duration) *adminCache {
	return &adminCache{dir: dir, ttl: ttl, now: time.Now, known: map[adminKey]adminAnswer{}}
}

// member reports whether the entry dn is in group (nested membership
// counts). An entry that no longer exists at dn (deleted, renamed or moved
// since the last sync) is not a member; a directory that cannot answer is
// an error.
func (a *adminCache) member(ctx context.Context, group, dn string) (bool, error) {
	k := adminKey{group, directory.NormDN(dn)}
	ttl := a.ttl()
	a.mu.Lock()
	ans, ok := a.known[k]
	a.mu.Unlock()
	if ok && a.now().Sub(ans.at) < ttl {
		return ans.member, nil
	}
	v, err, _ := a.flight.Do(k.group+"\x00"+k.dn, func() (any, error) {
		asked := a.now()
		// The lookup is shared: one caller hanging up must not fail the
		// others (the directory client bounds it with its own timeouts).
		ok, err := a.dir.IsMember(context.WithoutCancel(ctx), dn, group)
		if errors.Is(err, directory.ErrUserNotFound) {
			ok, err = false, nil
		}
		if err != nil {
			return false, err
		}
		if ttl > 0 {
			a.remember(k, adminAnswer{member: ok, at: asked})
		}
		return ok, nil
	})
	if err != nil {
		return false, err
	}
	return v.(bool), nil
}

func (a *adminCache) remember(k adminKey, ans adminAnswer) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.known) >= maxAdminAnswers {
		ttl, now := a.ttl(), a.now()
		for k, v := range a.known {
			if now.Sub(v.at) >= ttl {
				delete(a.known, k)
			}
		}
		if len(a.known) >= maxAdminAnswers {
			clear(a.known)
		}
	}
	a.known[k] = ans
}
