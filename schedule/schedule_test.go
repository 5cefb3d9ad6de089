package schedule

import (
	"strings"
	"testing"
	"time"
)

func TestParseAccepts(t *testing.T) {
	for _, spec := range []string{"*/5 * * * *", "0 2 * * *", "@hourly", "@daily", "@every 1s", "@every 1h30m", "CRON_TZ=Europe/Paris 0 2 * * 1-5", " 15 3 1 * * "} {
		if _, err := Parse(spec); err != nil {
			t.Errorf("Parse(%q): %v", spec, err)
		}
	}
}

func TestParseRejectsWithClearErrors(t *testing.T) {
	cases := map[string]string{
		"":                            "empty",
		"* * * *":                     "expected 5 fields",
		"0 0 2 * * *":                 "expected 5 fields", // 6 fields: seconds are not supported
		"61 * * * *":                  "expected 5 fields",
		"@every":                      "@every needs a duration",
		"@every soon":                 "@every needs a duration",
		"@every 100ms":                "at least 1s",
		"@fortnightly":                "expected 5 fields",
		"CRON_TZ=Nowhere/X 0 2 * * *": "expected 5 fields",
	}
	for spec, want := range cases {
		_, err := Parse(spec)
		if err == nil {
			t.Errorf("Parse(%q) accepted", spec)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %q, want it to mention %q", spec, err, want)
		}
	}
}

func TestEveryIsAlignedAcrossStartTimes(t *testing.T) {
	e := Every{D: 10 * time.Second}
	a := e.Next(time.Date(2025, 3, 1, 12, 0, 3, 123, time.UTC))
	b := e.Next(time.Date(2025, 3, 1, 12, 0, 7, 999, time.UTC))
	want := time.Date(2025, 3, 1, 12, 0, 10, 0, time.UTC)
	if !a.Equal(want) || !b.Equal(want) {
		t.Fatalf("Next = %v and %v, want both %v", a, b, want)
	}
	// Exactly on a tick: the next one, never the same instant again.
	if got := e.Next(want); !got.Equal(want.Add(10 * time.Second)) {
		t.Fatalf("Next(on tick) = %v", got)
	}
}

func TestPrevNamesTheTickAJobBelongsTo(t *testing.T) {
	s, err := Parse("*/5 * * * *")
	if err != nil {
		t.Fatal(err)
	}
	tick := time.Date(2025, 3, 1, 12, 5, 0, 0, time.UTC)
	for _, late := range []time.Duration{0, 3 * time.Millisecond, 40 * time.Second} {
		if got := Prev(s, tick.Add(late)); !got.Equal(tick) {
			t.Errorf("Prev(tick+%s) = %v, want %v", late, got, tick)
		}
	}
	e, _ := Parse("@every 1s")
	now := time.Date(2025, 3, 1, 12, 5, 7, 2e6, time.UTC)
	if got := Prev(e, now); !got.Equal(now.Truncate(time.Second)) {
		t.Errorf("Prev(@every 1s) = %v", got)
	}
	// A job delayed past the lookback still gets a stable name.
	d, _ := Parse("0 2 * * *")
	late := time.Date(2025, 3, 1, 2, 30, 0, 5, time.UTC)
	if got := Prev(d, late); !got.Equal(late.Truncate(time.Second)) {
		t.Errorf("Prev(long delayed) = %v", got)
	}
}
