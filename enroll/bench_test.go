package enroll

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/descope/virtualwebauthn"
	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/testsrv"
)

// benchClients is the number of concurrent clients of the sign-in benchmark.
const benchClients = 64

// benchDuration is how long each measurement runs.
const benchDuration = 10 * time.Second

// BenchmarkPasskeySignIn measures passkey sign-in ceremonies (begin +
// finish over HTTP, each finish verified, the passkey's counter and last use
// written, a session created and the sign-in audited) per second at 64
// concurrent clients, on SQLite and on PostgreSQL, with p50 and p99 latency
// of a whole ceremony; and, side by side, go-webauthn's own begin + finish
// in process with no HTTP and no database: the library limit. The clients'
// signatures (a software authenticator, ECDSA P-256) are made on the same
// two cores in both cases.
//
//	go test -run '^$' -bench PasskeySignIn -benchtime 1x ./enroll/
//
// PASSBRIDGE_BENCH_ONLY=sqlite (or postgres) runs the portal on that
// database alone, so that a -cpuprofile holds the portal's samples only.
func BenchmarkPasskeySignIn(b *testing.B) {
	if d := os.Getenv("PASSBRIDGE_BENCH_ONLY"); d != "" {
		// One database alone, no library run: for a profile of the portal.
		r := benchPortal(b, d)
		b.Logf("portal on %s, %d clients: %.0f ceremonies/s, p50 %s, p99 %s, %d errors", d, benchClients, r.Rate, r.P50, r.P99, r.Errors)
		return
	}
	lib := benchLibrary(b)
	b.Logf("go-webauthn in process (library limit): %.0f ceremonies/s, p50 %s, p99 %s", lib.Rate, lib.P50, lib.P99)
	b.ReportMetric(lib.Rate, "lib-ceremonies/s")
	for _, driver := range []string{"sqlite", "postgres"} {
		r := benchPortal(b, driver)
		b.Logf("portal on %s, %d clients: %.0f ceremonies/s (%.0f%% of the library limit), p50 %s, p99 %s, %d errors",
			driver, benchClients, r.Rate, 100*r.Rate/lib.Rate, r.P50, r.P99, r.Errors)
		r.Report(b, driver, "ceremonies")
	}
}

func benchPortal(b *testing.B, driver string) testsrv.Measured {
	e := newEnv(b, envOptions{driver: driver, quiet: true, configure: func(cfg *config.Config) {
		cfg.Portal.Policy.MaxPasskeys = 100
		if driver != "sqlite" {
			cfg.Database.MaxOpenConns = 20
		}
	}})
	u := e.addUser("bench", true)
	e.sync()
	transport := &http.Transport{MaxIdleConns: 2 * benchClients, MaxIdleConnsPerHost: 2 * benchClients}
	clients := make([]*client, benchClients)
	creds := make([]virtualwebauthn.Credential, benchClients)
	for i := range clients {
		c := e.client()
		c.http.Transport = transport
		c.mustSignIn(u.name, u.password)
		creds[i] = c.register(fmt.Sprintf("key %d", i))
		clients[i] = c
	}
	return testsrv.Measure(benchClients, benchDuration, func(w int) error {
		c := clients[w]
		r := c.post("/webauthn/login/begin", nil)
		if r.status != http.StatusOK {
			return fmt.Errorf("begin: %d", r.status)
		}
		var begin struct {
			Ceremony string          `json:"ceremony"`
			Options  json.RawMessage `json:"options"`
		}
		if err := json.Unmarshal([]byte(r.body), &begin); err != nil {
			return err
		}
		r = c.post("/webauthn/login/finish", map[string]any{"ceremony": begin.Ceremony, "credential": json.RawMessage(c.assert(string(begin.Options), &creds[w]))})
		if r.status != http.StatusOK {
			return fmt.Errorf("finish: %d %s", r.status, r.body)
		}
		return nil
	})
}

// benchLibrary is the same ceremony with go-webauthn alone.
func benchLibrary(b *testing.B) testsrv.Measured {
	wa, err := webauthn.New(&webauthn.Config{RPID: "localhost", RPDisplayName: "bench", RPOrigins: []string{"http://localhost:1"}})
	if err != nil {
		b.Fatal(err)
	}
	type party struct {
		c    *client
		cred virtualwebauthn.Credential
		user *waUser
	}
	parties := make([]*party, benchClients)
	for i := range parties {
		c := newClient(b, "http://localhost:1")
		handle := []byte(fmt.Sprintf("user-%02d", i))
		user := &waUser{Handle: handle, Name: "u", DisplayName: "u"}
		creation, sd, err := wa.BeginRegistration(user, webauthn.WithExtensions(webauthn.WithExtensionCredProps()))
		if err != nil {
			b.Fatal(err)
		}
		opts, _ := json.Marshal(creation)
		cred, att := c.attest(string(opts))
		parsed, err := protocol.ParseCredentialCreationResponseBytes([]byte(att))
		if err != nil {
			b.Fatal(err)
		}
		wc, err := wa.CreateCredential(user, *sd, parsed)
		if err != nil {
			b.Fatal(err)
		}
		user.Creds = []webauthn.Credential{*wc}
		c.auth.Options.UserHandle = handle
		parties[i] = &party{c: c, cred: cred, user: user}
	}
	return testsrv.Measure(benchClients, benchDuration, func(w int) error {
		p := parties[w]
		assertion, sd, err := wa.BeginDiscoverableLogin()
		if err != nil {
			return err
		}
		opts, _ := json.Marshal(assertion)
		parsed, err := protocol.ParseCredentialRequestResponseBytes([]byte(p.c.assert(string(opts), &p.cred)))
		if err != nil {
			return err
		}
		_, wc, err := wa.ValidatePasskeyLogin(func(_, _ []byte) (webauthn.User, error) { return p.user, nil }, *sd, parsed)
		if err != nil {
			return err
		}
		p.user.Creds[0].Authenticator.SignCount = wc.Authenticator.SignCount
		return nil
	})
}
