package migrate

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/store"
)

// TestFaultConnectionCutDuringApply cuts apply's database connections
// (through a TCP proxy) at real mid-points: inside the baseline between two
// chunks, inside a step's transaction after its DDL (on MySQL: after the
// DDL committed, before its history row), while CREATE INDEX CONCURRENTLY
// (MySQL: an INPLACE ALTER) runs on the server, after a step's COMMIT went
// out unanswered, and on a foreign key. Each cut apply fails and leaves the
// password hashes untouched; a normal apply then finishes the job, verify
// passes, and the hashes are byte for byte those before. (kill -9 of apply
// is TestKillDuringApply.)
func TestFaultConnectionCutDuringApply(t *testing.T) {
	for _, name := range []string{"django", "wordpress"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			f, cfg, direct, before, proxy, pcfg := loadBehindProxy(t, name)

			p, err := NewPlan(ctx, direct, cfg)
			if err != nil {
				t.Fatal(err)
			}
			col := stepIndex(t, p, "add-column", "passkey_state")
			fk := stepIndex(t, p, "add-foreign-key", "_credentials_user_key_fk")
			ddl := "INDEX CONCURRENTLY"
			if f.engine == MySQL {
				ddl = "LOCK=NONE"
			}
			// at: the hook point where the rule is armed ("" at the start).
			cuts := []struct {
				what, at string
				rule     testsrv.Rule
			}{
				{"baseline, between chunks", "chunk:0", testsrv.DropAfter(testsrv.Upstream, 0)},
				{"after the users column's DDL", fmt.Sprintf("executed:%d", col), testsrv.DropAfter(testsrv.Upstream, 0)},
				{"during an online index build", "", testsrv.CutOn(testsrv.Upstream, ddl, testsrv.CutAfter)},
				{"after the foreign key's DDL", fmt.Sprintf("executed:%d", fk), testsrv.DropAfter(testsrv.Upstream, 0)},
			}
			if f.engine == Postgres {
				// MySQL's DDL commits on its own: no COMMIT goes out.
				cuts = append(cuts, struct {
					what, at string
					rule     testsrv.Rule
				}{"the first COMMIT unanswered", "", testsrv.CutOn(testsrv.Downstream, "COMMIT", testsrv.Drop)})
			}
			for _, c := range cuts {
				n := proxy.Cuts()
				if c.at == "" {
					proxy.SetRule(c.rule)
				}
				opts := Options{chunk: testChunk, hook: func(point string, i int, s Step) {
					if fmt.Sprintf("%s:%d", point, i) == c.at {
						proxy.SetRule(c.rule)
					}
				}}
				// Each apply on its own pool, as each passbridge migrate
				// apply is its own process.
				db := openDB(t, pcfg.Database)
				_, err := Apply(ctx, db, &pcfg, opts)
				db.Close()
				proxy.SetRule(nil)
				if proxy.Cuts() == n {
					t.Fatalf("cut %s: the rule never fired (apply: %v)", c.what, err)
				}
				if err == nil {
					t.Fatalf("cut %s: apply succeeded on a cut connection", c.what)
				}
				t.Logf("cut %s: %v", c.what, err)
				samePasswords(t, "after the cut "+c.what, before, readPasswords(t, direct, cfg))
				if pend, err := Pending(ctx, direct, cfg); err != nil || len(pend) == 0 {
					t.Fatalf("after the cut %s: pending %d, %v", c.what, len(pend), err)
				}
			}
			rep, err := Apply(ctx, openDB(t, pcfg.Database), &pcfg, Options{chunk: testChunk})
			if err != nil {
				t.Fatalf("the normal apply after the cuts: %v", err)
			}
			t.Logf("the normal apply after the cuts: %v", actions(rep))
			if pend, err := Pending(ctx, direct, cfg); err != nil || len(pend) != 0 {
				t.Fatalf("pending after the normal apply: %d %v", len(pend), err)
			}
			v, err := Verify(ctx, direct, cfg)
			if err != nil || !v.OK || v.Passwords.BaselineRows != int64(len(before)) || v.Passwords.Chunks != (len(before)+testChunk-1)/testChunk {
				t.Fatalf("verify after the cuts: %+v %+v %v", v, v.Passwords, err)
			}
			st, err := Status(ctx, direct, cfg)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range st.Steps {
				if s.Drift != "" {
					t.Fatalf("drift after the cuts: %s: %s", s.ID, s.Drift)
				}
			}
			samePasswords(t, "after the normal apply", before, readPasswords(t, direct, cfg))
		})
	}
}

// loadBehindProxy loads the fixture called name and returns, besides what
// load does and the password hashes before anything ran, a TCP proxy to
// its server that can cut connections and the configuration that goes
// through it.
func loadBehindProxy(t *testing.T, name string) (f fixture, cfg *config.Config, direct *store.DB, before map[string]*string, proxy *testsrv.Proxy, pcfg config.Config) {
	t.Helper()
	f = fixtureNamed(t, name)
	cfg, direct = load(t, f)
	before = readPasswords(t, direct, cfg)
	proxy = testsrv.StartProxy(t, dsnHostPort(t, cfg.Database.DSN.Reveal()))
	pcfg = *cfg
	pcfg.Database.DSN = config.Secret(proxy.RewriteDSN(cfg.Database.DSN.Reveal()))
	return f, cfg, direct, before, proxy, pcfg
}

// dsnHostPort is the server address of a postgres:// URL or a MySQL DSN.
func dsnHostPort(t *testing.T, dsn string) string {
	t.Helper()
	if strings.HasPrefix(dsn, "postgres") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		return u.Host
	}
	i := strings.Index(dsn, "@tcp(")
	j := strings.Index(dsn, ")/")
	if i < 0 || j < i {
		t.Fatalf("DSN without tcp(host:port)")
	}
	return dsn[i+len("@tcp(") : j]
}

// TestFaultSecondApplySamePool: a process that runs apply again after a
// cut connection, on the same pool (the demo, a test, a daemon that
// migrates at start and retries), must not start its session or take its
// lock on a connection the cut left dead in the pool: the second apply
// finishes the job. The cut comes at a real mid-point (after the users
// column's DDL, before its history row), and the retry follows at once,
// well inside the second during which the drivers trust an idle
// connection without a ping.
func TestFaultSecondApplySamePool(t *testing.T) {
	for _, name := range []string{"django", "wordpress"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			_, cfg, direct, before, proxy, pcfg := loadBehindProxy(t, name)
			db := openDB(t, pcfg.Database) // one pool for both applies

			// The pool's idle connections were in use a moment before the
			// cut, as in a busy process whose other goroutines take and
			// return them: pgx hands a connection out again without a
			// ping within a second of its last use.
			busy := func() { testsrv.Churn(t, db.DB.DB, 4) }
			p := mustPlan(t, direct, cfg)
			col := stepIndex(t, p, "add-column", "passkey_state")
			opts := Options{chunk: testChunk, hook: func(point string, i int, s Step) {
				if point == "executed" && i == col {
					busy() // new connections, then the same ones again:
					busy() // each handed out (and reset) a moment ago
					proxy.Cut()
				}
			}}
			if _, err := Apply(ctx, db, &pcfg, opts); err == nil || proxy.Cuts() == 0 {
				t.Fatalf("the cut apply: %v (cuts %d)", err, proxy.Cuts())
			}
			rep, err := Apply(ctx, db, &pcfg, Options{chunk: testChunk})
			if err != nil {
				t.Fatalf("the second apply on the same pool: %v", err)
			}
			t.Logf("the second apply: %v", actions(rep))
			if v, err := Verify(ctx, direct, cfg); err != nil || !v.OK {
				t.Fatalf("verify: %+v %v", v, err)
			}
			samePasswords(t, "after the second apply", before, readPasswords(t, direct, cfg))
		})
	}
}
