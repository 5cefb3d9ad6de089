package ratelimit

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/passbridge/passbridge/internal/testdb"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/schema"
)

func TestMain(m *testing.M) { os.Exit(testsrv.Run(m)) }

func TestAddress(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7":                         "192.0.2.7",
		"::ffff:192.0.2.7":                  "192.0.2.7",
		"2001:db8:aa:1::1":                  "2001:db8:aa:1::/64",
		"2001:db8:aa:1:ffff:ffff:ffff:ffff": "2001:db8:aa:1::/64",
		"2001:DB8:AA:1:0:0:0:2":             "2001:db8:aa:1::/64",
		"fe80::1%eth0":                      "fe80::/64",
		"::1":                               "::/64",
		"2001:db8:aa:2::1":                  "2001:db8:aa:2::/64",
		"not an address":                    "not an address",
		"":                                  "",
	} {
		if got := Address(in); got != want {
			t.Errorf("Address(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestLimits: the sliding account slots and the address counter, on a real
// database; a key too long for the column keeps its own rows.
func TestLimits(t *testing.T) {
	db, cfg := testdb.Open(t, "sqlite")
	l := New(db, schema.NamesFor(cfg))
	ctx := context.Background()
	var slots []Slot
	for i := range 3 {
		s, ok, _, err := l.Take(ctx, "id:alice", 3, time.Minute)
		if err != nil || !ok {
			t.Fatalf("take %d: %v %v", i, ok, err)
		}
		slots = append(slots, s)
	}
	if _, ok, retry, err := l.Take(ctx, "id:alice", 3, time.Minute); err != nil || ok || retry.Before(time.Now()) {
		t.Fatalf("4th take: ok %v, retry %v, %v", ok, retry, err)
	}
	if err := l.GiveBack(ctx, slots[1]); err != nil {
		t.Fatal(err)
	}
	if _, ok, _, err := l.Take(ctx, "id:alice", 3, time.Minute); err != nil || !ok {
		t.Fatalf("take after a give back: %v %v", ok, err)
	}
	long := strings.Repeat("x", 300)
	if _, ok, _, _ := l.Take(ctx, long+"a", 1, time.Minute); !ok {
		t.Fatal("long key a")
	}
	if _, ok, _, _ := l.Take(ctx, long+"b", 1, time.Minute); !ok {
		t.Fatal("long key b shares a's slot")
	}
	for i := range 2 {
		if ok, err := l.Hit(ctx, "2001:db8::/64", 2, time.Minute); err != nil || !ok {
			t.Fatalf("hit %d: %v %v", i, ok, err)
		}
	}
	if ok, _ := l.Hit(ctx, "2001:db8::/64", 2, time.Minute); ok {
		t.Fatal("3rd hit allowed")
	}
	if over, err := l.Exceeded(ctx, "2001:db8::/64", 2, time.Minute); err != nil || !over {
		t.Fatalf("Exceeded after 2 of 2: %v %v", over, err)
	}
	if over, _ := l.Exceeded(ctx, "2001:db8::/64", 3, time.Minute); over {
		t.Fatal("Exceeded after 2 of 3")
	}
	if over, _ := l.Exceeded(ctx, "192.0.2.1", 1, time.Minute); over {
		t.Fatal("Exceeded for a key never hit")
	}
	if err := l.Unhit(ctx, "2001:db8::/64"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := l.Hit(ctx, "2001:db8::/64", 2, time.Minute); !ok {
		t.Fatal("hit after an unhit refused")
	}
}
