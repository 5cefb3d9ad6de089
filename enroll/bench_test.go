package enroll

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
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
// in process with no HTTP and no database: the library limit; and between
// the two, the library behind a bare net/http server (no database, no
// middleware, ceremonies in memory), answering the same clients' same
// requests: the floor that HTTP itself sets on these cores. The clients'
// signatures (a software authenticator, ECDSA P-256) are made on the same
// two cores in every case.
//
//	go test -run '^$' -bench PasskeySignIn -benchtime 1x ./enroll/
//
// PASSBRIDGE_BENCH_ONLY=sqlite (or postgres) runs the portal on that
// database alone, so that a -cpuprofile holds the portal's samples only;
// PASSBRIDGE_BENCH_ONLY=http runs the bare net/http server alone.
func BenchmarkPasskeySignIn(b *testing.B) {
	if d := os.Getenv("PASSBRIDGE_BENCH_ONLY"); d == "http" {
		r := benchLibraryHTTP(b)
		b.Logf("go-webauthn behind bare net/http: %.0f ceremonies/s, p50 %s, p99 %s, %d errors; %s", r.Rate, r.P50, r.P99, r.Errors, perCeremony(r))
		return
	} else if d != "" {
		// One database alone, no library run: for a profile of the portal.
		r := benchPortal(b, d)
		b.Logf("portal on %s, %d clients: %.0f ceremonies/s, p50 %s, p99 %s, %d errors; %s", d, benchClients, r.Rate, r.P50, r.P99, r.Errors, perCeremony(r))
		return
	}
	lib := benchLibrary(b)
	b.Logf("go-webauthn in process (library limit): %.0f ceremonies/s, p50 %s, p99 %s; %s", lib.Rate, lib.P50, lib.P99, perCeremony(lib))
	b.ReportMetric(lib.Rate, "lib-ceremonies/s")
	bare := benchLibraryHTTP(b)
	b.Logf("go-webauthn behind bare net/http, no database (%.0f%% of the library limit): %.0f ceremonies/s, p50 %s, p99 %s, %d errors; %s",
		100*bare.Rate/lib.Rate, bare.Rate, bare.P50, bare.P99, bare.Errors, perCeremony(bare))
	bare.Report(b, "http", "ceremonies")
	for _, driver := range []string{"sqlite", "postgres"} {
		r := benchPortal(b, driver)
		b.Logf("portal on %s, %d clients: %.0f ceremonies/s (%.0f%% of the library limit), p50 %s, p99 %s, %d errors; %s (passbridge and its clients)",
			driver, benchClients, r.Rate, 100*r.Rate/lib.Rate, r.P50, r.P99, r.Errors, perCeremony(r))
		r.Report(b, driver, "ceremonies")
	}
}

// perCeremony is what one ceremony cost the test process, for the logs.
func perCeremony(m testsrv.Measured) string {
	return fmt.Sprintf("per ceremony %s CPU, %.1f KiB allocated", m.CPUPerOp, m.AllocPerOp/1024)
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
		return signInOnce(clients[w], &creds[w])
	})
}

// signInOnce is one passkey sign-in over HTTP, as a browser makes it:
// begin, the authenticator's signature, finish.
func signInOnce(c *client, cred *virtualwebauthn.Credential) error {
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
	r = c.post("/webauthn/login/finish", map[string]any{"ceremony": begin.Ceremony, "credential": json.RawMessage(c.assert(string(begin.Options), cred))})
	if r.status != http.StatusOK {
		return fmt.Errorf("finish: %d %s", r.status, r.body)
	}
	return nil
}

// libraryParty is a client of the library benchmarks: its software
// authenticator, its passkey and the user the library knows it by.
type libraryParty struct {
	c    *client
	cred virtualwebauthn.Credential
	user *waUser
}

// libraryParties registers one passkey per client with go-webauthn alone
// (origin base).
func libraryParties(b *testing.B, wa *webauthn.WebAuthn, base string) []*libraryParty {
	parties := make([]*libraryParty, benchClients)
	for i := range parties {
		c := newClient(b, base)
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
		parties[i] = &libraryParty{c: c, cred: cred, user: user}
	}
	return parties
}

// benchLibrary is the same ceremony with go-webauthn alone.
func benchLibrary(b *testing.B) testsrv.Measured {
	wa, err := webauthn.New(&webauthn.Config{RPID: "localhost", RPDisplayName: "bench", RPOrigins: []string{"http://localhost:1"}})
	if err != nil {
		b.Fatal(err)
	}
	parties := libraryParties(b, wa, "http://localhost:1")
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

// benchLibraryHTTP is the library's ceremony behind a bare net/http server:
// the same begin and finish requests as the portal's, from the same
// clients, with the ceremonies and users in memory, no database, no
// middleware, no session. What HTTP itself costs on these two cores.
func benchLibraryHTTP(b *testing.B) testsrv.Measured {
	var mu sync.Mutex
	ceremonies := map[string]*webauthn.SessionData{}
	users := map[string]*waUser{}
	var wa *webauthn.WebAuthn
	mux := http.NewServeMux()
	mux.HandleFunc("POST /webauthn/login/begin", func(w http.ResponseWriter, r *http.Request) {
		assertion, sd, err := wa.BeginDiscoverableLogin()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		id := rand.Text()
		mu.Lock()
		ceremonies[id] = sd
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(ceremonyResponse{Ceremony: id, Options: assertion})
	})
	mux.HandleFunc("POST /webauthn/login/finish", func(w http.ResponseWriter, r *http.Request) {
		var req finishRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		sd := ceremonies[req.Ceremony]
		delete(ceremonies, req.Ceremony)
		mu.Unlock()
		parsed, err := protocol.ParseCredentialRequestResponseBytes(req.Credential)
		if err != nil || sd == nil {
			http.Error(w, "unknown ceremony or malformed response", http.StatusBadRequest)
			return
		}
		_, wc, err := wa.ValidatePasskeyLogin(func(_, handle []byte) (webauthn.User, error) {
			mu.Lock()
			defer mu.Unlock()
			return users[string(handle)], nil
		}, *sd, parsed)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		users[string(parsed.Response.UserHandle)].Creds[0].Authenticator.SignCount = wc.Authenticator.SignCount
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	})
	srv := httptest.NewServer(mux)
	b.Cleanup(srv.Close)
	var err error
	wa, err = webauthn.New(&webauthn.Config{RPID: "localhost", RPDisplayName: "bench", RPOrigins: []string{srv.URL}})
	if err != nil {
		b.Fatal(err)
	}
	transport := &http.Transport{MaxIdleConns: 2 * benchClients, MaxIdleConnsPerHost: 2 * benchClients}
	parties := libraryParties(b, wa, srv.URL)
	for _, p := range parties {
		users[string(p.user.Handle)] = p.user
		p.c.http.Transport = transport
		p.c.csrf = "unused" // no CSRF here; post sends the header anyway
	}
	return testsrv.Measure(benchClients, benchDuration, func(w int) error {
		return signInOnce(parties[w].c, &parties[w].cred)
	})
}
