// Package loadbench puts the passkey portal under load: two `passbridge
// run` replicas (the real static binary, as subprocesses) on one
// PostgreSQL 15 and one slapd holding 100,000 users, 500 concurrent
// clients doing passkey sign-ins and enrollments for 60 s, every
// ceremony begun on one replica and finished on the other, while a
// `passbridge sync --full` of the whole directory runs against the same
// database. Run it with
//
//	go test -run '^$' -bench Load -benchtime 1x -timeout 30m ./bench/load/
//
// Knobs (environment): PASSBRIDGE_LOAD_CLIENTS (500),
// PASSBRIDGE_LOAD_DURATION (60s), PASSBRIDGE_LOAD_USERS (100000),
// PASSBRIDGE_LOAD_ENROLL_PCT (10: the share of enrollments among the
// clients' ceremonies), PASSBRIDGE_LOAD_CHANGED (1000: users whose
// displayName changes in the directory before the window, so that the
// full sync under load writes), PASSBRIDGE_LOAD_MAX_CONNS (0: the
// replicas' database.max_open_conns, 0 = passbridge's default),
// PASSBRIDGE_LOAD_CONTROL (1: after the two-replica window, the control
// run: the same clients for the same duration against replica 1 alone,
// every ceremony begun and finished on it, no sync; 0 skips it).
//
// Errors (any non-2xx answer, transport error or refused verification)
// must be 0, and the sync's result must be right; timings are reported,
// not asserted. Nothing here runs under `go test ./...`: there are no
// tests, and servers start only inside the benchmark.
package loadbench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/descope/virtualwebauthn"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/dirsync"
	"github.com/passbridge/passbridge/enroll"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

func TestMain(m *testing.M) { os.Exit(testsrv.Run(m)) }

// knobs are the benchmark's sizes.
type knobs struct {
	clients   int
	duration  time.Duration
	users     int
	enrollPct int
	changed   int
	maxConns  int
	control   bool
}

func readKnobs(b *testing.B) knobs {
	k := knobs{
		clients:   envInt(b, "PASSBRIDGE_LOAD_CLIENTS", 500),
		users:     envInt(b, "PASSBRIDGE_LOAD_USERS", 100_000),
		enrollPct: envInt(b, "PASSBRIDGE_LOAD_ENROLL_PCT", 10),
		changed:   envInt(b, "PASSBRIDGE_LOAD_CHANGED", 1000),
		maxConns:  envInt(b, "PASSBRIDGE_LOAD_MAX_CONNS", 0),
		control:   envInt(b, "PASSBRIDGE_LOAD_CONTROL", 1) != 0,
		duration:  60 * time.Second,
	}
	if s := os.Getenv("PASSBRIDGE_LOAD_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			b.Fatalf("PASSBRIDGE_LOAD_DURATION=%q: want a duration such as 60s", s)
		}
		k.duration = d
	}
	if k.clients < 2 || k.users < 2*k.clients || k.enrollPct < 0 || k.enrollPct > 100 || k.changed > k.users {
		b.Fatalf("knobs %+v: want clients >= 2, users >= 2 x clients, enroll pct 0..100, changed <= users", k)
	}
	return k
}

func envInt(b *testing.B, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		b.Fatalf("%s=%q: want a number", name, s)
	}
	return n
}

// Ceremony kinds measured.
const (
	kindSignIn = "signin" // passkey sign-in: login begin on one replica, finish on the other
	kindLink   = "link"   // an enrollment link redeemed (a new session)
	kindEnroll = "enroll" // passkey registration: begin on one replica, finish on the other
)

var kinds = []string{kindSignIn, kindLink, kindEnroll}

// sample is one ceremony that succeeded.
type sample struct {
	at  time.Duration // since the window began
	lat time.Duration
}

// results is what the window measured.
type results struct {
	k        knobs
	window   time.Duration
	samples  map[string][]sample
	errors   map[string]int
	firstErr []string
	// resent requests (see client.do) and their connections' mean idle time
	resent   int
	staleAvg time.Duration
	// errAt counts errors per second of the window.
	errAt map[int]int
	// poolEmpty counts enrollments that fell back to a sign-in because
	// every prepared link was used.
	poolEmpty int

	syncAlone    syncRun // the same full sync before the window, nothing changed, no load
	syncLoad     syncRun // under load
	syncStart    time.Duration
	replicaHWM   [2]int64 // VmHWM at the end (peak RSS of the whole life)
	replicaPeak  [2]int64 // highest VmRSS sampled during the window
	replicaStart [2]int64 // VmRSS right before the window
	loadAvg      []string // /proc/loadavg during the window
	// CPU seconds used during the window, by process.
	cpu []cpuUse
	// control is the single-replica control run (nil when skipped).
	control *results
}

type cpuUse struct {
	who  string
	secs float64
}

type syncRun struct {
	wall    time.Duration
	maxRSS  int64
	cpu     float64 // user + system seconds
	summary dirsync.Summary
}

var measured *results

// BenchmarkLoad is the portal under load while a full sync runs; see the
// package comment.
func BenchmarkLoad(b *testing.B) {
	// A run takes minutes: measure once, report the same figures if the
	// testing package asks again.
	if measured == nil {
		measured = run(b)
	}
	report(b, measured)
}

func run(b *testing.B) *results {
	ctx := context.Background()
	k := readKnobs(b)
	b.Logf("knobs: %d clients, %s, %d users, %d%% enrollments, %d changed before the window, max_open_conns %d",
		k.clients, k.duration, k.users, k.enrollPct, k.changed, k.maxConns)
	bin := testsrv.Passbridge(b)
	work := b.TempDir()

	t0 := time.Now()
	srv := testsrv.StartSlapd(b, testsrv.SlapdOptions{Users: k.users})
	b.Logf("slapd seeded with %d users (slapadd) and started in %s", k.users, time.Since(t0).Round(100*time.Millisecond))
	pg := testsrv.Postgres(b)
	dsn := pg.NewDatabase(b)

	ports := [2]int{testsrv.FreePort(b), testsrv.FreePort(b)}
	for ports[1] == ports[0] {
		ports[1] = testsrv.FreePort(b)
	}
	urls := [2]string{"http://localhost:" + strconv.Itoa(ports[0]), "http://localhost:" + strconv.Itoa(ports[1])}
	cfgPath := writeConfig(b, work, dsn, srv, urls, k.maxConns)
	cfg, err := config.Load(cfgPath, []string{})
	if err != nil {
		b.Fatal(err)
	}
	db, err := store.Open(ctx, cfg.Database, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	legacyUsers(ctx, b, db, k.users)
	passbridge(b, bin, "migrate", "apply", "--config", cfgPath)

	first := runSync(b, bin, cfgPath)
	if s := first.summary; s.Entries != k.users || s.Changes[dirsync.KindCreate] != k.users || s.Linked != k.users {
		b.Fatalf("first full sync: %+v: want %d creates, all linked", s, k.users)
	}

	var reps [2]*replica
	for i := range reps {
		reps[i] = startReplica(b, bin, cfgPath, work, i, ports[i])
	}

	// Every client enrolls its own passkey up front, through a one-time
	// enrollment link, on its home replica (clients alternate between
	// the two), registration finished on the other.
	transport := newTransport(k.clients)
	defer transport.CloseIdleConnections()
	clients := make([]*client, k.clients)
	for w := range clients {
		h := w % 2
		clients[w] = newClient(transport, urls[h], urls[1-h])
	}
	// Client users are spread over the directory; the enrollment pool
	// takes the users in between.
	clientUser := func(w int) int { return 1 + w*(k.users/k.clients) }
	isClientUser := map[int]bool{}
	for w := range clients {
		isClientUser[clientUser(w)] = true
	}
	// The first link through the CLI, exactly as IT hands it out; the
	// others through the same function in process (enroll.IssueLink,
	// which is what `passbridge enroll link` runs), to save 500 process
	// starts.
	var cli enroll.Link
	if err := json.Unmarshal(passbridge(b, bin, "enroll", "link", testsrv.SeedUID(clientUser(0)), "-o", "json", "--config", cfgPath), &cli); err != nil {
		b.Fatalf("passbridge enroll link -o json: %v", err)
	}
	t1 := time.Now()
	parallel(b, 8, k.clients, func(w int) error {
		path := cli.URL
		if w > 0 {
			l, err := enroll.IssueLink(ctx, db, cfg, testsrv.SeedUID(clientUser(w)), enroll.LinkOptions{CreatedBy: "cli:loadbench"})
			if err != nil {
				return err
			}
			path = l.URL
		}
		c := clients[w]
		if err := c.useLink(0, linkPath(path)); err != nil {
			return err
		}
		cred, handle, err := c.register(0, "load")
		if err != nil {
			return err
		}
		c.cred, c.auth = cred, virtualwebauthn.NewAuthenticator()
		c.auth.Options.UserHandle = handle
		c.auth.AddCredential(cred)
		c.ready = true
		return c.signIn(0)
	})
	b.Logf("%d clients enrolled a passkey each (link, register, one sign-in) in %s", k.clients, time.Since(t1).Round(100*time.Millisecond))

	// The links for enrollments during the window: one per user, users
	// that have no passkey yet; enough for 200 enrollments/s at 10 %
	// (a quiet two-core machine does 80): a pool that runs dry turns
	// enrollments into sign-ins, which the report says.
	poolSize := min(int(k.duration.Seconds()*float64(k.enrollPct)*20), k.users-k.clients)
	var poolUsers []int
	for i := 1; len(poolUsers) < poolSize && i <= k.users; i++ {
		if !isClientUser[i] {
			poolUsers = append(poolUsers, i)
		}
	}
	rand.Shuffle(len(poolUsers), func(i, j int) { poolUsers[i], poolUsers[j] = poolUsers[j], poolUsers[i] })
	pool := make([]string, len(poolUsers))
	t2 := time.Now()
	parallel(b, 8, len(pool), func(i int) error {
		l, err := enroll.IssueLink(ctx, db, cfg, testsrv.SeedUID(poolUsers[i]), enroll.LinkOptions{CreatedBy: "cli:loadbench"})
		if err != nil {
			return err
		}
		pool[i] = linkPath(l.URL)
		return nil
	})
	b.Logf("%d enrollment links issued for the window in %s", len(pool), time.Since(t2).Round(100*time.Millisecond))

	res := &results{k: k, samples: map[string][]sample{}, errors: map[string]int{}, errAt: map[int]int{}}
	// The reference: the same full sync, alone, nothing changed.
	res.syncAlone = runSync(b, bin, cfgPath)
	if s := res.syncAlone.summary; s.Entries != k.users || s.Changes.String() != "no changes" {
		b.Fatalf("full sync alone: %+v: want no changes", s)
	}
	// Then users change in the directory (spread over it, some of them
	// clients), so that the sync under load writes: the nightly full
	// sync of a directory where a few people changed.
	t3 := time.Now()
	for j := range k.changed {
		i := 1 + j*(k.users/max(k.changed, 1)) + 3
		srv.Modify(b, "uid="+testsrv.SeedUID(i)+","+srv.PeopleDN, map[string][]string{"displayName": {fmt.Sprintf("Changed User %06d", i)}})
	}
	if k.changed > 0 {
		b.Logf("%d users changed in the directory in %s", k.changed, time.Since(t3).Round(100*time.Millisecond))
	}

	for i, r := range reps {
		res.replicaStart[i], _ = procMem(r.pid())
	}
	slapdPID := findPID("slapd", strings.TrimPrefix(srv.URL, "ldap://"))
	cpuOf := func() []cpuUse {
		u := []cpuUse{{"replica 1", procCPU(reps[0].pid(), false)}, {"replica 2", procCPU(reps[1].pid(), false)},
			{"PostgreSQL (all its processes)", procCPU(pg.PID(), true)}, {"slapd", procCPU(slapdPID, false)}, {"the clients (this test process)", selfCPU()}}
		return u
	}
	before := cpuOf()
	resent.Store(0)
	staleMillis.Store(0)
	var next atomic.Int64 // next unused link of the pool, for both windows
	window(b, res, bin, cfgPath, clients, reps, pool, &next, true)
	if res.resent = int(resent.Load()); res.resent > 0 {
		res.staleAvg = time.Duration(staleMillis.Load()/int64(res.resent)) * time.Millisecond
	}
	for i, u := range cpuOf() {
		res.cpu = append(res.cpu, cpuUse{u.who, u.secs - before[i].secs})
	}
	res.cpu = append(res.cpu, cpuUse{"the sync process", res.syncLoad.cpu})

	for i, r := range reps {
		_, res.replicaHWM[i] = procMem(r.pid())
	}
	// The control: the same clients against replica 1 alone, no sync, so
	// that what the second replica (and the sync) costs or brings shows.
	if k.control {
		ctl := &results{k: k, samples: map[string][]sample{}, errors: map[string]int{}, errAt: map[int]int{}}
		for _, c := range clients {
			c.single(urls[0])
		}
		cpu0 := cpuOf()
		window(b, ctl, bin, cfgPath, clients, reps, pool, &next, false)
		for i, u := range cpuOf() {
			ctl.cpu = append(ctl.cpu, cpuUse{u.who, u.secs - cpu0[i].secs})
		}
		res.control = ctl
	}
	for _, r := range reps {
		r.stop(b)
	}

	// The result of the sync, and what the portal wrote, from the database.
	s := res.syncLoad.summary
	if s.Status != dirsync.StatusSucceeded || s.Mode != "full" || s.Entries != k.users || s.Changes[dirsync.KindUpdate] != k.changed || len(s.Changes) > 1 {
		b.Errorf("full sync under load: %+v: want %d entries, update=%d and nothing else", s, k.users, k.changed)
	}
	n := schema.NamesFor(cfg)
	q := db.Dialect().Quote
	count := func(query string, args ...any) int {
		var c int
		if err := store.Get(ctx, db, &c, query, args...); err != nil {
			b.Fatalf("%s: %v", query, err)
		}
		return c
	}
	if got := count("SELECT COUNT(*) FROM " + n.Identities + " WHERE " + q("state") + " = 'active' AND " + q("user_key") + " IS NOT NULL"); got != k.users {
		b.Errorf("active linked identities after the sync: %d, want %d", got, k.users)
	}
	if got := count("SELECT COUNT(*) FROM " + n.Identities); got != k.users {
		b.Errorf("identities after the sync: %d, want %d", got, k.users)
	}
	if k.changed > 0 {
		if got := count("SELECT COUNT(*) FROM " + n.Identities + " WHERE " + q("display_name") + " LIKE 'Changed User %'"); got != k.changed {
			b.Errorf("identities with the changed display name: %d, want %d", got, k.changed)
		}
	}
	enrolled, signins := len(res.samples[kindEnroll]), len(res.samples[kindSignIn])
	if c := res.control; c != nil {
		enrolled += len(c.samples[kindEnroll])
		signins += len(c.samples[kindSignIn])
	}
	if got := count("SELECT COUNT(*) FROM " + n.Credentials); got != k.clients+enrolled {
		b.Errorf("passkeys stored: %d, want %d (%d up front + %d enrolled under load)", got, k.clients+enrolled, k.clients, enrolled)
	}
	if got := count("SELECT COUNT(*) FROM " + n.Audit + " WHERE " + q("event") + " = 'signin.passkey'"); got != k.clients+signins {
		b.Errorf("signin.passkey audit events: %d, want %d (%d up front + %d under load)", got, k.clients+signins, k.clients, signins)
	}
	return res
}

// window runs the clients for the configured duration while a full sync
// runs, and samples memory and load.
func window(b *testing.B, res *results, bin, cfgPath string, clients []*client, reps [2]*replica, pool []string, next *atomic.Int64, withSync bool) {
	k := res.k
	var mu sync.Mutex
	var poolEmpty atomic.Int64

	start := time.Now()
	deadline := start.Add(k.duration)

	// The sync starts with the window (the control run has none).
	syncDone := make(chan syncRun, 1)
	if withSync {
		syncPID := make(chan int, 1)
		go func() { syncDone <- runSyncPID(b, bin, cfgPath, syncPID) }()
		<-syncPID
		res.syncStart = time.Since(start)
	} else {
		syncDone <- syncRun{}
	}

	// Memory and load, every 250 ms.
	stopPoll := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		lastLoad := time.Time{}
		for {
			for i, r := range reps {
				if rss, _ := procMem(r.pid()); rss > res.replicaPeak[i] {
					res.replicaPeak[i] = rss
				}
			}
			if time.Since(lastLoad) >= 10*time.Second {
				if la, err := os.ReadFile("/proc/loadavg"); err == nil {
					res.loadAvg = append(res.loadAvg, fmt.Sprintf("t=%ds %s", int(time.Since(start).Seconds()), strings.Join(strings.Fields(string(la))[:3], " ")))
				}
				lastLoad = time.Now()
			}
			select {
			case <-stopPoll:
				return
			case <-tick.C:
			}
		}
	}()

	var wg sync.WaitGroup
	for w, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			home := 0 // c.urls[0] is the client's home replica
			mine := map[string][]sample{}
			bad := map[string]int{}
			badAt := map[int]int{}
			var errs []string
			fail := func(kind string, err error) {
				bad[kind]++
				badAt[int(time.Since(start).Seconds())]++
				if len(errs) < 3 {
					errs = append(errs, fmt.Sprintf("t=%.1fs client %d %s: %v", time.Since(start).Seconds(), w, kind, err))
				}
			}
			// Spread the clients' first requests over 100 ms.
			time.Sleep(time.Duration(rng.IntN(100)) * time.Millisecond)
			for time.Now().Before(deadline) {
				if rng.IntN(100) < k.enrollPct {
					i := int(next.Add(1)) - 1
					if i < len(pool) {
						t0 := time.Now()
						if err := c.useLink(home, pool[i]); err != nil {
							fail(kindLink, err)
							continue
						}
						t1 := time.Now()
						mine[kindLink] = append(mine[kindLink], sample{at: t0.Sub(start), lat: t1.Sub(t0)})
						if _, _, err := c.register(home, ""); err != nil {
							fail(kindEnroll, err)
							continue
						}
						mine[kindEnroll] = append(mine[kindEnroll], sample{at: t1.Sub(start), lat: time.Since(t1)})
						continue
					}
					poolEmpty.Add(1)
				}
				t0 := time.Now()
				if err := c.signIn(home); err != nil {
					fail(kindSignIn, err)
					continue
				}
				mine[kindSignIn] = append(mine[kindSignIn], sample{at: t0.Sub(start), lat: time.Since(t0)})
			}
			mu.Lock()
			defer mu.Unlock()
			for kind, s := range mine {
				res.samples[kind] = append(res.samples[kind], s...)
			}
			for kind, n := range bad {
				res.errors[kind] += n
			}
			for sec, n := range badAt {
				res.errAt[sec] += n
			}
			for _, e := range errs {
				if len(res.firstErr) < 10 {
					res.firstErr = append(res.firstErr, e)
				}
			}
		}()
	}
	wg.Wait()
	res.window = time.Since(start)
	res.poolEmpty = int(poolEmpty.Load())
	res.syncLoad = <-syncDone
	close(stopPoll)
	<-polled
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		res.loadAvg = append(res.loadAvg, fmt.Sprintf("end %s", strings.Join(strings.Fields(string(la))[:3], " ")))
	}
}

func report(b *testing.B, r *results) {
	var sb strings.Builder
	w := tabwriter.NewWriter(&sb, 2, 8, 2, ' ', 0)
	fmt.Fprintf(&sb, "\n%d clients for %s against 2 replicas (every ceremony begun on one, finished on the other), PostgreSQL 15, %d users; full sync under load from t=%.1fs to t=%.1fs\n",
		r.k.clients, r.window.Round(100*time.Millisecond), r.k.users, r.syncStart.Seconds(), (r.syncStart + r.syncLoad.wall).Seconds())
	fmt.Fprintf(w, "kind\tceremonies\tper second\tp50\tp99\tmax\terrors\t| during the sync: per second\tp50\tp99\n")
	syncEnd := r.syncStart + r.syncLoad.wall
	for _, kind := range kinds {
		all := r.samples[kind]
		st := stats(all, r.window)
		var during []sample
		for _, s := range all {
			if s.at >= r.syncStart && s.at+s.lat <= syncEnd {
				during = append(during, s)
			}
		}
		ds := stats(during, r.syncLoad.wall)
		fmt.Fprintf(w, "%s\t%d\t%.1f\t%s\t%s\t%s\t%d\t| %.1f\t%s\t%s\n", kind, st.n, st.rate, ms(st.p50), ms(st.p99), ms(st.max), r.errors[kind], ds.rate, ms(ds.p50), ms(ds.p99))
		b.ReportMetric(st.rate, kind+"/s")
		b.ReportMetric(float64(st.p50.Microseconds())/1000, kind+"-p50-ms")
		b.ReportMetric(float64(st.p99.Microseconds())/1000, kind+"-p99-ms")
	}
	w.Flush()
	total := 0
	for _, n := range r.errors {
		total += n
	}
	if c := r.control; c != nil {
		fmt.Fprintf(&sb, "\ncontrol: the same %d clients for %s against replica 1 alone (begin and finish on it), no sync\n", r.k.clients, c.window.Round(100*time.Millisecond))
		cw := tabwriter.NewWriter(&sb, 2, 8, 2, ' ', 0)
		fmt.Fprintf(cw, "kind\tceremonies\tper second\tp50\tp99\tmax\terrors\t| 2 replicas outside the sync: per second\tp50\tp99\n")
		for _, kind := range kinds {
			st := stats(c.samples[kind], c.window)
			var outside []sample
			for _, s := range r.samples[kind] {
				if s.at+s.lat < r.syncStart || s.at > syncEnd {
					outside = append(outside, s)
				}
			}
			other := stats(outside, r.window-r.syncLoad.wall)
			fmt.Fprintf(cw, "%s\t%d\t%.1f\t%s\t%s\t%s\t%d\t| %.1f\t%s\t%s\n", kind, st.n, st.rate, ms(st.p50), ms(st.p99), ms(st.max), c.errors[kind], other.rate, ms(other.p50), ms(other.p99))
			b.ReportMetric(st.rate, "control-"+kind+"/s")
			b.ReportMetric(float64(st.p99.Microseconds())/1000, "control-"+kind+"-p99-ms")
		}
		cw.Flush()
		var cpus []string
		for _, u := range c.cpu {
			cpus = append(cpus, fmt.Sprintf("%s %.1f s", u.who, u.secs))
		}
		fmt.Fprintf(&sb, "CPU used during the control window: %s\n", strings.Join(cpus, ", "))
		for _, n := range c.errors {
			total += n
		}
		r.firstErr = append(r.firstErr, c.firstErr...)
	}
	mib := func(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
	fmt.Fprintf(&sb, "errors: %d", total)
	if r.poolEmpty > 0 {
		fmt.Fprintf(&sb, " (and %d enrollments became sign-ins: the prepared links ran out)", r.poolEmpty)
	}
	fmt.Fprintln(&sb)
	if len(r.errAt) > 0 {
		secs := slices.Sorted(maps.Keys(r.errAt))
		var at []string
		for _, sec := range secs {
			at = append(at, fmt.Sprintf("t=%ds: %d", sec, r.errAt[sec]))
		}
		fmt.Fprintf(&sb, "  errors by second of the window: %s\n", strings.Join(at, ", "))
	}
	for _, e := range r.firstErr {
		fmt.Fprintf(&sb, "  %s\n", e)
	}
	fmt.Fprintf(&sb, "requests sent again on a new connection, as browsers do, because the server had closed the kept-alive connection they went out on (never seen by the server; not errors): %d", r.resent)
	if r.resent > 0 {
		fmt.Fprintf(&sb, " (those connections had been idle %.1f s on average)", r.staleAvg.Seconds())
	}
	fmt.Fprintln(&sb)
	for i := range 2 {
		fmt.Fprintf(&sb, "replica %d: RSS %s before the window, highest sampled during it %s, peak of its life (VmHWM) %s\n", i+1,
			mib(r.replicaStart[i]), mib(r.replicaPeak[i]), mib(r.replicaHWM[i]))
	}
	fmt.Fprintf(&sb, "full sync alone (no load, nothing changed): %.2f s, peak RSS %s\n", r.syncAlone.wall.Seconds(), mib(r.syncAlone.maxRSS))
	fmt.Fprintf(&sb, "full sync under load: %.2f s (LDAP %.2f s, DB %.2f s), %d entries, %s, peak RSS %s\n", r.syncLoad.wall.Seconds(),
		float64(r.syncLoad.summary.LDAPMillis)/1000, float64(r.syncLoad.summary.DBMillis)/1000, r.syncLoad.summary.Entries, r.syncLoad.summary.Changes, mib(r.syncLoad.maxRSS))
	var cpus []string
	for _, u := range r.cpu {
		cpus = append(cpus, fmt.Sprintf("%s %.1f s", u.who, u.secs))
	}
	fmt.Fprintf(&sb, "CPU used during the window (%.1f s x 2 cores = %.1f core-seconds): %s\n", r.window.Seconds(), 2*r.window.Seconds(), strings.Join(cpus, ", "))
	fmt.Fprintf(&sb, "load average (1, 5, 15 min): %s\n", strings.Join(r.loadAvg, "; "))
	fmt.Print(sb.String())
	b.Log(sb.String())

	b.ReportMetric(float64(total), "errors")
	b.ReportMetric(float64(r.resent), "resent")
	b.ReportMetric(float64(max(r.replicaHWM[0], r.replicaHWM[1]))/(1<<20), "replica-peak-MiB")
	b.ReportMetric(float64(r.syncLoad.maxRSS)/(1<<20), "sync-peak-MiB")
	b.ReportMetric(r.syncLoad.wall.Seconds(), "sync-s")
	b.ReportMetric(r.syncAlone.wall.Seconds(), "sync-alone-s")
	if total != 0 {
		b.Errorf("%d errors under load (must be 0); first: %s", total, strings.Join(r.firstErr, "; "))
	}
}

type stat struct {
	n             int
	rate          float64
	p50, p99, max time.Duration
}

func stats(s []sample, over time.Duration) stat {
	lat := make([]time.Duration, len(s))
	for i, x := range s {
		lat[i] = x.lat
	}
	slices.Sort(lat)
	st := stat{n: len(lat)}
	if over > 0 {
		st.rate = float64(len(lat)) / over.Seconds()
	}
	if len(lat) > 0 {
		st.p50, st.p99, st.max = lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]
	}
	return st
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// parallel runs fn(0..n-1) on workers goroutines and fails on the first error.
func parallel(b *testing.B, workers, n int, fn func(i int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = fmt.Errorf("item %d: %w", i, err) })
					next.Store(int64(n))
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		b.Fatal(first)
	}
}

// linkPath is the path of a link URL (/link/SECRET).
func linkPath(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return s
	}
	return u.Path
}

// procMem reads the current and the peak resident set size of a process.
func procMem(pid int) (rss, hwm int64) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb * 1024
		case "VmHWM:":
			hwm = kb * 1024
		}
	}
	return rss, hwm
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// selfCPU is the CPU time of this process.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return tv(ru.Utime) + tv(ru.Stime)
}

// procCPU is the user + system CPU seconds of a process; with children,
// also of its direct children, running or exited (PostgreSQL's backends).
func procCPU(pid int, children bool) float64 {
	if pid <= 0 {
		return 0
	}
	stat := func(p string, reaped bool) (ppid int, secs float64, ok bool) {
		data, err := os.ReadFile("/proc/" + p + "/stat")
		if err != nil {
			return 0, 0, false
		}
		// The command name is in parentheses and may hold spaces.
		f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
		if len(f) < 15 {
			return 0, 0, false
		}
		ppid, _ = strconv.Atoi(f[1])
		n := 2
		if reaped {
			n = 4 // cutime, cstime: children that exited and were waited for
		}
		for _, v := range f[11 : 11+n] {
			x, _ := strconv.ParseFloat(v, 64)
			secs += x / 100 // USER_HZ is 100 on Linux
		}
		return ppid, secs, true
	}
	_, total, _ := stat(strconv.Itoa(pid), children)
	if children {
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			if ppid, secs, ok := stat(e.Name(), false); ok && ppid == pid {
				total += secs
			}
		}
	}
	return total
}

// findPID finds a process by its name and a string of its command line.
func findPID(name, arg string) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, _ := os.ReadFile("/proc/" + e.Name() + "/comm")
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if strings.TrimSpace(string(comm)) == name && bytes.Contains(cmdline, []byte(arg)) {
			return pid
		}
	}
	return 0
}

// replica is one `passbridge run` process.
type replica struct {
	cmd  *exec.Cmd
	log  string
	done chan error
}

func (r *replica) pid() int { return r.cmd.Process.Pid }

func startReplica(b *testing.B, bin, cfgPath, work string, i, port int) *replica {
	logPath := filepath.Join(work, fmt.Sprintf("replica%d.log", i+1))
	logf, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(bin, "run", "--config", cfgPath, "--listen", addr)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	r := &replica{cmd: cmd, log: logPath, done: make(chan error, 1)}
	go func() { r.done <- cmd.Wait(); logf.Close() }()
	b.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return r
			}
		}
		select {
		case err := <-r.done:
			b.Fatalf("replica %d exited: %v\n%s", i+1, err, tail(logPath))
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("replica %d: no /healthz after 30 s\n%s", i+1, tail(logPath))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the replica with SIGTERM and shows what it logged (warnings
// and errors: the configuration's log level).
func (r *replica) stop(b *testing.B) {
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-r.done:
		if err != nil {
			b.Errorf("replica %s: %v", r.log, err)
		}
	case <-time.After(40 * time.Second):
		r.cmd.Process.Kill()
		<-r.done
		b.Errorf("replica %s did not stop within 40 s", r.log)
	}
	if t := tail(r.log); strings.TrimSpace(t) != "" {
		b.Logf("%s (last lines):\n%s", filepath.Base(r.log), t)
	}
}

func tail(path string) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

// childEnv is the environment of passbridge processes: without this
// benchmark's knobs and any other PASSBRIDGE_ variable (passbridge
// refuses unknown ones; the configuration is the generated file).
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PASSBRIDGE_") {
			env = append(env, kv)
		}
	}
	return env
}

// passbridge runs the binary to completion and returns its stdout.
func passbridge(b *testing.B, bin string, args ...string) []byte {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		b.Fatalf("passbridge %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.Bytes()
}

func runSync(b *testing.B, bin, cfgPath string) syncRun {
	return runSyncPID(b, bin, cfgPath, nil)
}

// runSyncPID runs `passbridge sync --full -o json` as its own process
// (its pid sent to pid once started): wall time, summary, peak RSS from
// rusage. It may run on another goroutine: it reports with b.Error.
func runSyncPID(b *testing.B, bin, cfgPath string, pid chan<- int) syncRun {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, "sync", "--full", "-o", "json", "--config", cfgPath)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	t0 := time.Now()
	err := cmd.Start()
	if pid != nil {
		if err != nil {
			pid <- 0
		} else {
			pid <- cmd.Process.Pid
		}
	}
	if err == nil {
		err = cmd.Wait()
	}
	r := syncRun{wall: time.Since(t0)}
	if err != nil {
		b.Errorf("passbridge sync --full: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
		return r
	}
	var out struct {
		Summary dirsync.Summary `json:"summary"`
		Error   string          `json:"error"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		b.Errorf("sync output: %v\n%s", err, stdout.String())
		return r
	}
	if out.Error != "" || out.Summary.Status != dirsync.StatusSucceeded {
		b.Errorf("sync: %s %s", out.Summary.Status, out.Error)
	}
	r.summary = out.Summary
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.maxRSS = ru.Maxrss * 1024
		r.cpu = tv(ru.Utime) + tv(ru.Stime)
	}
	b.Logf("passbridge sync --full: %s, %d entries, %s, peak RSS %.1f MiB (ldap %d ms, db %d ms)", r.wall.Round(time.Millisecond),
		r.summary.Entries, r.summary.Changes, float64(r.maxRSS)/(1<<20), r.summary.LDAPMillis, r.summary.DBMillis)
	return r
}

// writeConfig writes the configuration both replicas and the CLI use:
// the portal on (RP ID localhost, both replicas' origins), schedules off
// (the benchmark runs the syncs), warnings and errors logged.
func writeConfig(b *testing.B, dir, dsn string, srv *testsrv.LDAP, urls [2]string, maxConns int) string {
	path := filepath.Join(dir, "passbridge.yaml")
	yaml := fmt.Sprintf(`database: {driver: postgres, dsn: %q, max_open_conns: %d}
users_table: {name: users, key: id, username: username, email: email, password: password_hash}
%sschedule: {incremental: "", full: ""}
portal:
  rp_id: localhost
  rp_name: Load Corp
  origins: [%q, %q]
  policy: {max_passkeys: 10}
log: {level: warn, format: text}
`, dsn, maxConns, srv.DirectoryYAML(srv.PeopleDN, "max_deletions: 5%"), urls[0], urls[1])
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		b.Fatal(err)
	}
	return path
}

// legacyUsers creates the application's users table with a row for every
// directory user (linked by email by the first sync).
func legacyUsers(ctx context.Context, b *testing.B, db *store.DB, users int) {
	for _, q := range []string{
		`CREATE TABLE users (id bigserial PRIMARY KEY, username varchar(150) NOT NULL UNIQUE, email varchar(254), password_hash varchar(255) NOT NULL)`,
		fmt.Sprintf(`INSERT INTO users (username, email, password_hash)
		SELECT 'user' || lpad(i::text, 6, '0'), 'user' || lpad(i::text, 6, '0') || '@corp.example', '$2y$10$legacy.hash.' || lpad(i::text, 6, '0')
		FROM generate_series(1, %d) AS i`, users),
		`ANALYZE users`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			b.Fatalf("users table: %v\n%s", err, q)
		}
	}
}
