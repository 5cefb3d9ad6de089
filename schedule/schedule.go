// Package schedule parses passbridge's sync schedules: standard 5-field cron
// specs (optionally prefixed with CRON_TZ=Zone), descriptors such as @hourly,
// and "@every <duration>". It is a leaf (robfig/cron only) so that the
// config package validates specs at `config check` time without importing
// the daemon that runs them (agent).
package schedule

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// MinEvery is the shortest @every interval accepted.
const MinEvery = time.Second

var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Parse turns a spec into a schedule. "@every D" is aligned to multiples of
// D since a fixed epoch (not to the process start, as robfig/cron does), so
// that every replica ticks at the same instants and one database lock can
// elect one runner per tick.
func Parse(spec string) (cron.Schedule, error) {
	s := strings.TrimSpace(spec)
	if s == "" {
		return nil, fmt.Errorf("empty schedule")
	}
	if rest, ok := strings.CutPrefix(s, "@every"); ok {
		d, err := time.ParseDuration(strings.TrimSpace(rest))
		if err != nil {
			return nil, fmt.Errorf("%q: @every needs a duration such as @every 5m or @every 1h30m", spec)
		}
		if d < MinEvery {
			return nil, fmt.Errorf("%q: @every must be at least %s", spec, MinEvery)
		}
		return Every{D: d}, nil
	}
	sched, err := parser.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%q: %v (expected 5 fields: minute hour day-of-month month day-of-week, such as \"*/5 * * * *\", a descriptor such as @hourly, or @every 5m)", spec, err)
	}
	return sched, nil
}

// Every fires at every multiple of D since the zero time (UTC), so replicas
// started at different moments share their tick instants.
type Every struct{ D time.Duration }

// Next returns the first multiple of D strictly after t.
func (e Every) Next(t time.Time) time.Time {
	return t.Truncate(e.D).Add(e.D)
}

// lookback bounds how far back Prev searches: a tick dispatched later than
// this after its instant is treated as belonging to "now".
const lookback = 2 * time.Minute

// Prev returns the newest tick instant at or before now: the tick a firing
// job belongs to. Jobs start a few milliseconds after their instant; this
// names the instant so that replicas can agree on which tick they are
// running. If no tick fell within the lookback window (a job delayed by
// minutes), now truncated to the second is returned.
func Prev(s cron.Schedule, now time.Time) time.Time {
	if e, ok := s.(Every); ok {
		return now.Truncate(e.D)
	}
	var last time.Time
	for t := s.Next(now.Add(-lookback)); !t.IsZero() && !t.After(now); t = s.Next(t) {
		last = t
	}
	if last.IsZero() {
		return now.Truncate(time.Second)
	}
	return last
}
