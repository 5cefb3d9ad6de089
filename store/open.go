package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"

	"github.com/passbridge/passbridge/config"
)

// Connecting: the pool, the DSNs of the three drivers with passbridge's
// defaults, retries until the database answers, and passwords kept out of
// every message.

// DefaultConnectTimeout applies when database.connect_timeout is 0.
const DefaultConnectTimeout = 30 * time.Second

const maxBackoff = 5 * time.Second

// Open connects to the database of cfg: it makes the pool, then pings until
// the database answers, waiting between attempts with exponential backoff
// (100ms doubling up to 5s) for at most cfg.ConnectTimeout (30s when 0). It
// gives up at once on errors that waiting cannot fix, such as a rejected
// password or a missing database. Errors name the driver, host and database
// and never the password.
func Open(ctx context.Context, cfg config.Database, log *slog.Logger) (*DB, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d, err := NewDialect(cfg.Driver)
	if err != nil {
		return nil, fmt.Errorf("database.driver: %w", err)
	}
	dsn := cfg.DSN.Reveal()
	if dsn == "" {
		return nil, errors.New("database.dsn is empty")
	}
	if cfg.MaxOpenConns < 0 {
		return nil, fmt.Errorf("database.max_open_conns must be 0 (the default) or more, not %d", cfg.MaxOpenConns)
	}
	sqlDB, t, err := d.open(dsn, log)
	if err != nil {
		return nil, err
	}
	d.pool(sqlDB, t, cfg.MaxOpenConns)
	db := &DB{DB: sqlx.NewDb(sqlDB, d.DriverName()), dialect: d, target: t, log: log}
	if d.kind == SQLite {
		db.stmts = newStmtCache()
		db.group = &groupCommit{}
		if !t.memory {
			// Readers beside the one writer: see Reader.
			sep := "?"
			if strings.Contains(dsn, "?") {
				sep = "&"
			}
			rDB, _, err := d.open(dsn+sep+"_pragma=query_only(1)", log)
			if err != nil {
				sqlDB.Close()
				return nil, err
			}
			d.pool(rDB, t, sqliteReaders)
			db.reader = &DB{DB: sqlx.NewDb(rDB, d.DriverName()), dialect: d, target: t, log: log, stmts: newStmtCache()}
		}
	}

	timeout := cfg.ConnectTimeout.D()
	if timeout <= 0 {
		timeout = DefaultConnectTimeout
	}
	if err := db.connect(ctx, timeout); err != nil {
		db.Close()
		return nil, err
	}
	log.Info("database connected", "driver", string(d.kind), "database", t.desc)
	return db, nil
}

func (db *DB) connect(ctx context.Context, timeout time.Duration) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	wait := 100 * time.Millisecond
	var last error // the last reason that is not our own deadline
	gaveUp := func(err error, attempt int) error {
		if last != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			err = last
		}
		return db.connectError(err, fmt.Sprintf("gave up after %s and %d attempt(s)", time.Since(start).Round(time.Millisecond), attempt))
	}
	for attempt := 1; ; attempt++ {
		err := db.PingContext(ctx)
		if err == nil {
			return nil
		}
		if db.dialect.permanent(err) {
			return db.connectError(err, fmt.Sprintf("not retried after %d attempt(s)", attempt))
		}
		if ctx.Err() != nil {
			return gaveUp(err, attempt)
		}
		last = err
		db.log.Warn("database not reachable, retrying", "database", db.target.desc, "attempt", attempt,
			"retry_in", wait, "err", redact(err.Error(), db.target.secrets))
		select {
		case <-ctx.Done():
			return gaveUp(err, attempt)
		case <-time.After(wait):
		}
		wait = min(wait*2, maxBackoff)
	}
}

// connectError is an error whose message has been scrubbed of the password.
type connectError struct {
	msg string
	err error
}

func (e *connectError) Error() string { return e.msg }
func (e *connectError) Unwrap() error { return e.err }

func (db *DB) connectError(err error, how string) error {
	msg := fmt.Sprintf("connect to %s: %s: %s", db.target.desc, how, err)
	return &connectError{msg: redact(msg, db.target.secrets), err: err}
}

// target describes a database for messages, without its password.
type target struct {
	desc string
	// secrets are scrubbed from every error message, in case a driver
	// quotes the DSN.
	secrets []string
	// sqlitePath is the absolute path of an SQLite file ("" in memory).
	sqlitePath string
	memory     bool
}

// Defaults for SQLite connections, applied unless the DSN sets them.
const sqliteBusyTimeout = 5 * time.Second

// open makes the pool (without connecting) for dsn.
func (d Dialect) open(dsn string, log *slog.Logger) (*sql.DB, target, error) {
	switch d.kind {
	case Postgres:
		secrets := dsnSecretCandidates(dsn)
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			var pe *pgconn.ParseConfigError
			if errors.As(err, &pe) && errors.Unwrap(pe) != nil {
				err = errors.Unwrap(pe)
			}
			return nil, target{}, fmt.Errorf("database.dsn is not a valid PostgreSQL connection string (postgres://user:password@host:5432/database or host=... dbname=...): %s",
				redact(err.Error(), secrets))
		}
		if cfg.RuntimeParams == nil {
			cfg.RuntimeParams = map[string]string{}
		}
		if cfg.RuntimeParams["application_name"] == "" {
			// Shows in pg_stat_activity, for the DBA.
			cfg.RuntimeParams["application_name"] = "passbridge"
		}
		t := target{
			desc:    fmt.Sprintf("postgres database %q on %s as user %q", cfg.Database, net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), cfg.User),
			secrets: append(secrets, secretForms(cfg.Password)...),
		}
		return stdlib.OpenDB(*cfg), t, nil
	case MySQL:
		secrets := dsnSecretCandidates(dsn)
		cfg, err := mysql.ParseDSN(dsn)
		if err != nil {
			return nil, target{}, fmt.Errorf("database.dsn is not a valid MySQL DSN (user:password@tcp(host:3306)/database?parseTime=true): %s",
				redact(err.Error(), secrets))
		}
		if cfg.DBName == "" {
			return nil, target{}, errors.New("database.dsn names no database: MySQL DSNs end in /database, as in user:password@tcp(host:3306)/app")
		}
		// Timestamps scan into time.Time on every dialect.
		cfg.ParseTime = true
		// RowsAffected counts the rows an UPDATE matched, as on PostgreSQL
		// and SQLite, not only those whose values changed: "0 rows" then
		// reliably means "no such row".
		cfg.ClientFoundRows = true
		// Arguments are put into the statement by the driver (it escapes
		// them for the connection's character set, and refuses charsets
		// where that is unsafe), so a statement is one round trip instead
		// of three (prepare, execute, close): the sync sends thousands.
		cfg.InterpolateParams = true
		// The driver writes and reads DATETIME as cfg.Loc (UTC unless the
		// DSN says loc=...). The session must agree, or NOW() and
		// CURRENT_TIMESTAMP defaults would be the server's local time
		// read back as UTC, and TIMESTAMP columns would convert wrongly.
		if _, set := cfg.Params["time_zone"]; !set && cfg.Loc == time.UTC {
			if cfg.Params == nil {
				cfg.Params = map[string]string{}
			}
			cfg.Params["time_zone"] = "'+00:00'"
		}
		// The driver's own complaints (a connection killed under it) go
		// to passbridge's log instead of stderr.
		if log != nil {
			cfg.Logger = mysqlLogger{log}
		}
		conn, err := mysql.NewConnector(cfg)
		if err != nil {
			return nil, target{}, fmt.Errorf("database.dsn: %s", redact(err.Error(), secrets))
		}
		t := target{
			desc:    fmt.Sprintf("mysql database %q on %s(%s) as user %q", cfg.DBName, cfg.Net, cfg.Addr, cfg.User),
			secrets: append(secrets, secretForms(cfg.Passwd)...),
		}
		return sql.OpenDB(conn), t, nil
	default:
		full, t, err := sqliteDSN(dsn)
		if err != nil {
			return nil, target{}, err
		}
		db, err := sql.Open("sqlite", full)
		if err != nil {
			return nil, target{}, fmt.Errorf("open %s: %w", t.desc, err)
		}
		return db, t, nil
	}
}

// pool sets the pool limits. maxOpen 0 takes the default: 10 connections
// to a server; one to SQLite, whose single writer then never waits on a
// lock held by another connection of the same process (a larger pool is
// allowed for file databases: readers then run beside the writer in WAL
// mode, and writers queue on busy_timeout).
func (d Dialect) pool(db *sql.DB, t target, maxOpen int) {
	switch {
	case d.kind == SQLite && t.memory:
		// Every connection to :memory: is a separate, empty database.
		maxOpen = 1
	case maxOpen > 0:
	case d.kind == SQLite:
		maxOpen = 1
	default:
		maxOpen = config.DefaultServerConns
	}
	db.SetMaxOpenConns(maxOpen)
	db.SetMaxIdleConns(maxOpen)
	if d.kind != SQLite {
		// Recycle connections, so that failovers, DNS changes and
		// server-side idle timeouts (MySQL wait_timeout) do not leave
		// dead ones in the pool. SQLite connections stay: closing the
		// last one of a :memory: database would lose it.
		db.SetConnMaxLifetime(30 * time.Minute)
		db.SetConnMaxIdleTime(5 * time.Minute)
	}
}

type mysqlLogger struct{ log *slog.Logger }

func (l mysqlLogger) Print(v ...any) {
	l.log.Warn("mysql driver: " + strings.TrimSpace(fmt.Sprint(v...)))
}

// sqliteDSN adds passbridge's defaults to an SQLite DSN (a file name or a
// file: URI, with modernc.org/sqlite's query parameters), keeping whatever
// the DSN already sets:
//
//   - _pragma=busy_timeout(5000): wait up to 5s for another writer (the
//     application itself) instead of failing at once;
//   - _pragma=synchronous(NORMAL) with WAL: commits do not wait for fsync;
//     safe against corruption, and a crash of the process loses nothing;
//   - _pragma=journal_mode(WAL): readers do not block the writer. This is
//     persistent: it converts the file, as every SQLite tool sees it;
//   - _pragma=foreign_keys(1): enforce the foreign keys passbridge declares;
//   - _pragma=temp_store(MEMORY): statement journals (one per savepoint:
//     every member of a group commit has one) and temporary tables stay in
//     memory instead of temporary files, whose write calls the sign-in's
//     profile showed as about a quarter of the group commit's time;
//   - _txlock=immediate: transactions take the write lock when they begin,
//     so that a transaction that reads and then writes cannot fail with
//     "database is locked" halfway;
//   - _time_format=sqlite and _timezone=UTC: times are written as
//     "2006-01-02 15:04:05.999999999+00:00", which sorts as text.
func sqliteDSN(dsn string) (string, target, error) {
	base, rawQuery, _ := strings.Cut(dsn, "?")
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return "", target{}, fmt.Errorf("database.dsn: invalid SQLite parameters after '?': %w", err)
	}
	has := func(keys ...string) bool {
		for _, k := range keys {
			if _, ok := q[k]; ok {
				return true
			}
		}
		return false
	}
	hasPragma := func(name string) bool {
		for _, v := range q["_pragma"] {
			v = strings.ToLower(strings.TrimSpace(v))
			if rest, ok := strings.CutPrefix(v, name); ok && (rest == "" || strings.ContainsAny(rest[:1], "(= ")) {
				return true
			}
		}
		return false
	}

	path := strings.TrimPrefix(base, "file:")
	if strings.HasPrefix(path, "//") {
		// file://host/path or file:///path
		if i := strings.Index(path[2:], "/"); i >= 0 {
			path = path[2+i:]
		} else {
			path = ""
		}
	}
	if p, err := url.PathUnescape(path); err == nil && strings.HasPrefix(base, "file:") {
		path = p
	}
	t := target{memory: path == "" || path == ":memory:" || q.Get("mode") == "memory"}
	if t.memory {
		t.desc = "sqlite in-memory database"
	} else {
		abs, err := filepath.Abs(path)
		if err != nil {
			return "", target{}, fmt.Errorf("database.dsn: SQLite path %q: %w", path, err)
		}
		t.sqlitePath, t.desc = abs, "sqlite database "+abs
		// Without this, SQLite reports a missing directory as "out of
		// memory".
		if st, err := os.Stat(filepath.Dir(abs)); err != nil || !st.IsDir() {
			return "", target{}, fmt.Errorf("open %s: directory %s does not exist", t.desc, filepath.Dir(abs))
		}
	}

	if !has("_busy_timeout", "_timeout") && !hasPragma("busy_timeout") {
		q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", sqliteBusyTimeout.Milliseconds()))
	}
	if !t.memory && !has("_journal_mode", "_journal") && !hasPragma("journal_mode") {
		q.Add("_pragma", "journal_mode(WAL)")
		// With WAL, NORMAL is SQLite's recommended durability: a commit
		// does not wait for fsync (the WAL is synced at checkpoints), the
		// file never corrupts, and only a power loss or OS crash can take
		// back the last commits; a crash of passbridge loses nothing.
		if !has("_synchronous") && !hasPragma("synchronous") {
			q.Add("_pragma", "synchronous(NORMAL)")
		}
	}
	if !has("_foreign_keys", "_fk") && !hasPragma("foreign_keys") {
		q.Add("_pragma", "foreign_keys(1)")
	}
	if !hasPragma("temp_store") {
		q.Add("_pragma", "temp_store(MEMORY)")
	}
	if !has("_txlock") {
		q.Set("_txlock", "immediate")
	}
	if !has("_time_format", "_time_integer_format") {
		q.Set("_time_format", "sqlite")
	}
	if !has("_timezone") {
		q.Set("_timezone", "UTC")
	}
	return base + "?" + q.Encode(), t, nil
}

// dsnSecretCandidates finds what may be a password in a DSN of any of the
// three forms, even a malformed one, so that it can be scrubbed from the
// drivers' parse errors, which quote the DSN.
func dsnSecretCandidates(dsn string) []string {
	var out []string
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if p, ok := u.User.Password(); ok {
			out = append(out, secretForms(p)...)
		}
	}
	for _, m := range kvPassword.FindAllStringSubmatch(dsn, -1) {
		out = append(out, secretForms(strings.Trim(m[1], "'"))...)
	}
	// user:password@... (MySQL, and URLs that did not parse). The password
	// may itself hold ':' or '@': the driver splits at the last '@'.
	rest := dsn
	if _, after, ok := strings.Cut(rest, "://"); ok {
		rest = after
	}
	if at := strings.LastIndex(rest, "@"); at > 0 {
		if _, pw, ok := strings.Cut(rest[:at], ":"); ok {
			out = append(out, secretForms(pw)...)
		}
	}
	return out
}

var kvPassword = regexp.MustCompile(`password\s*=\s*('[^']*'|[^\s&]+)`)

// secretForms are the ways a password may appear in a message: as is and
// URL-escaped.
func secretForms(pw string) []string {
	if pw == "" {
		return nil
	}
	return []string{pw, url.QueryEscape(pw), url.PathEscape(pw), strings.TrimSuffix((&url.URL{User: url.UserPassword("u", pw)}).String()[len("//u:"):], "@")}
}

// redact replaces every secret in msg, longest first.
func redact(msg string, secrets []string) string {
	seen := map[string]bool{}
	var list []string
	for _, s := range secrets {
		if s != "" && !seen[s] {
			seen[s] = true
			list = append(list, s)
		}
	}
	// Longest first, so that "secret" inside "secret%21" does not leave
	// "%21" behind as a hint.
	for i := range list {
		for j := i + 1; j < len(list); j++ {
			if len(list[j]) > len(list[i]) {
				list[i], list[j] = list[j], list[i]
			}
		}
	}
	for _, s := range list {
		msg = strings.ReplaceAll(msg, s, "********")
	}
	return msg
}
