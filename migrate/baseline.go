package migrate

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/passbridge/passbridge/schema"
)

// The password baseline. Before the first change, apply fingerprints the
// password column: per row, the SHA-256 of the stored bytes (in
// <prefix>schema_baseline_rows), and per range of keys in key order (a
// chunk), the row count and a SHA-256 over the chunk's "key:fingerprint"
// list (in <prefix>schema_baseline). Fingerprints are computed by the
// database where it can (PostgreSQL sha256(), MySQL SHA2()), so password
// hashes never travel to passbridge; SQLite has no hash function, so there
// passbridge reads the column and hashes it itself.
//
// verify recomputes, for the keys in the baseline only, each chunk's
// checksum from the live table and counts changed and deleted rows. Rows the
// application added after the baseline are not in it and are reported as
// added, never as a violation, whatever their key (serial or random uuid).
// The chunk checksums also protect the per-row fingerprints: editing a row's
// hash and its fingerprint together still changes its chunk's checksum.

// defaultChunk is the number of rows per baseline chunk: one short
// statement each, small enough never to hold a snapshot for long.
const defaultChunk = 2000

// baselinePause paces the baseline: after each chunk it waits this
// fraction of the time the chunk took, so that it never takes more than
// two thirds of one core from the application's database server.
const baselinePause = 0.5

type baseliner struct {
	eng       Engine
	users     string // quoted, qualified
	key, pw   string // quoted columns
	pwName    string
	keyType   string // for CAST: the key's type without its collation
	keyFamily string
	pwType    string
	rows      string // quoted, qualified <prefix>schema_baseline_rows
	chunks    string // quoted, qualified <prefix>schema_baseline
	chunk     int
	// afterChunk is called after each committed chunk (tests).
	afterChunk func(n int)
}

func newBaseliner(eng Engine, dbSchema string, users *UsersTable, pw ColumnInfo, prefix string, chunk int) *baseliner {
	if chunk <= 0 {
		chunk = defaultChunk
	}
	return &baseliner{
		eng: eng, users: eng.dialect().Table(dbSchema, users.Name),
		key: eng.dialect().Quote(users.Key.Name), pw: eng.dialect().Quote(pw.Name), pwName: pw.Name,
		keyType: castType(users.KeyType), keyFamily: eng.family(castType(users.KeyType)), pwType: pw.Type,
		rows: eng.dialect().Table(dbSchema, prefix+schema.BaselineRowsTable), chunks: eng.dialect().Table(dbSchema, prefix+schema.BaselineTable),
		chunk: chunk,
	}
}

// castType is a column type usable in CAST: without a COLLATE clause,
// which only a column definition takes (a comparison with the column then
// uses the column's collation).
func castType(t string) string {
	if i := strings.Index(strings.ToUpper(t), " COLLATE "); i >= 0 {
		return t[:i]
	}
	return t
}

// fp is the SQL for the fingerprint of the password column of alias u.
func (b *baseliner) fp(alias string) string {
	col := alias + "." + b.pw
	switch b.eng {
	case Postgres:
		switch t := strings.ToLower(b.pwType); {
		case t == "bytea":
			return "encode(sha256(" + col + "), 'hex')"
		case t == "text" || strings.HasPrefix(t, "character varying"):
			return "encode(sha256(convert_to(" + col + ", 'UTF8')), 'hex')"
		default:
			return "encode(sha256(convert_to(" + col + "::text, 'UTF8')), 'hex')"
		}
	case MySQL:
		return "SHA2(" + col + ", 256)"
	}
	return "" // SQLite: hashed in Go
}

// keyText renders a key as text, the same way at baseline and at verify.
func (b *baseliner) keyText(expr string) string {
	switch b.eng {
	case Postgres:
		return expr + "::text"
	case MySQL:
		return "CAST(" + expr + " AS CHAR)"
	}
	return "CAST(" + expr + " AS TEXT)"
}

// keyArg turns a key read as text back into a query argument of the right
// kind: comparing a MySQL BIGINT with a string would go through a double.
func (b *baseliner) keyArg(s string) any {
	if b.keyFamily == "int" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return n
		}
		if n, err := strconv.ParseUint(s, 10, 64); err == nil {
			return n
		}
	}
	return s
}

func (b *baseliner) after(first bool) string {
	if first {
		return ""
	}
	if b.eng == Postgres {
		return " WHERE u." + b.key + " > CAST(? AS " + b.keyType + ")"
	}
	return " WHERE u." + b.key + " > ?"
}

// pgChunkSQL takes one chunk inside PostgreSQL in a single statement: it
// copies the chunk's fingerprints and writes the chunk's summary from the
// rows it just inserted (no second scan), returning the chunk's last key.
// Arguments: the chunk number, then the previous last key unless first.
func (b *baseliner) pgChunkSQL(first bool) string {
	k := "ins.user_key::text"
	return "WITH ins AS (INSERT INTO " + b.rows + " (user_key, chunk, fingerprint) SELECT u." + b.key + ", ?, " + b.fp("u") +
		" FROM " + b.users + " u" + b.after(first) + " ORDER BY u." + b.key + " LIMIT " + strconv.Itoa(b.chunk) +
		" RETURNING user_key, chunk, fingerprint)" +
		" INSERT INTO " + b.chunks + " (chunk, first_key, last_key, row_count, checksum, taken_at)" +
		" SELECT min(ins.chunk), (SELECT " + k + " FROM ins ORDER BY ins.user_key LIMIT 1), (SELECT " + k + " FROM ins ORDER BY ins.user_key DESC LIMIT 1)," +
		" count(*), encode(sha256(convert_to(string_agg(" + k + " || ':' || coalesce(ins.fingerprint, '-'), ',' ORDER BY ins.user_key), 'UTF8')), 'hex'), now()" +
		" FROM ins HAVING count(*) > 0 RETURNING last_key, row_count"
}

func (b *baseliner) readSQL(first bool) string {
	val := b.fp("u")
	if b.eng == SQLite {
		val = "u." + b.pw
	}
	return "SELECT " + b.keyText("u."+b.key) + ", " + val + " FROM " + b.users + " u" + b.after(first) +
		" ORDER BY u." + b.key + " LIMIT " + strconv.Itoa(b.chunk)
}

// chunkCond selects the rows of the chunk being summarized: chunk 0 is
// the whole table at that point; later chunks are the keys after the last
// chunk's, found through the primary key (no index on chunk is needed).
func (b *baseliner) chunkCond(first bool) string {
	if first {
		return "r.chunk = ?"
	}
	return "r.user_key > ?"
}

// summarySQL computes a chunk's summary from the baseline rows table
// (MySQL; PostgreSQL does it in pgChunkSQL). Its arguments are the chunk
// number, then chunkCond's argument three times.
func (b *baseliner) summarySQL(first bool) string {
	// Qualified: in PostgreSQL, ORDER BY user_key would sort by the text
	// output column (also named user_key), putting 9999 after 10000.
	rk, cond := b.keyText("r.user_key"), b.chunkCond(first)
	head := "INSERT INTO " + b.chunks + " (chunk, first_key, last_key, row_count, checksum, taken_at) SELECT ?," +
		" (SELECT " + rk + " FROM " + b.rows + " r WHERE " + cond + " ORDER BY r.user_key LIMIT 1)," +
		" (SELECT " + rk + " FROM " + b.rows + " r WHERE " + cond + " ORDER BY r.user_key DESC LIMIT 1),"
	switch b.eng {
	case MySQL:
		return head + " COUNT(*), SHA2(GROUP_CONCAT(CONCAT(" + rk + ", ':', COALESCE(r.fingerprint, '-')) ORDER BY r.user_key SEPARATOR ','), 256), UTC_TIMESTAMP(6)" +
			" FROM " + b.rows + " r WHERE " + cond
	}
	return "" // SQLite: computed in Go
}

// describe is the baseline's SQL as plan prints it.
func (b *baseliner) describe() []string {
	switch b.eng {
	case Postgres:
		return []string{
			fmt.Sprintf("-- for each chunk of %d rows in key order, one statement in its own short transaction:", b.chunk),
			b.eng.dialect().Rebind(b.pgChunkSQL(false)),
		}
	case MySQL:
		return []string{
			"SET SESSION group_concat_max_len = 67108864",
			fmt.Sprintf("-- for each chunk of %d rows in key order (a plain, non-locking read):", b.chunk),
			b.readSQL(false),
			"-- then, in one transaction: INSERT INTO " + b.rows + " (user_key, chunk, fingerprint) VALUES (...), ...",
			b.summarySQL(false),
		}
	}
	return []string{
		fmt.Sprintf("-- for each chunk of %d rows in key order:", b.chunk),
		b.readSQL(false),
		"-- passbridge hashes each value with SHA-256 (SQLite has no hash function), then in one transaction:",
		"INSERT INTO " + b.rows + " (user_key, chunk, fingerprint) VALUES (...), ...",
		"INSERT INTO " + b.chunks + " (chunk, first_key, last_key, row_count, checksum, taken_at) VALUES (...)",
	}
}

// take fills the baseline, resuming after the last complete chunk when an
// earlier run was killed. conn is a dedicated connection.
func (b *baseliner) take(ctx context.Context, conn *sql.Conn) (rows int64, chunks int, err error) {
	if b.eng == MySQL {
		if _, err := conn.ExecContext(ctx, "SET SESSION group_concat_max_len = 67108864"); err != nil {
			return 0, 0, fmt.Errorf("baseline: %w", err)
		}
	}
	// Resume: every chunk row is written in the same transaction as its
	// rows, so the last chunk row says where to go on from.
	var last sql.NullString
	var next sql.NullInt64
	err = conn.QueryRowContext(ctx, b.eng.dialect().Rebind("SELECT max(chunk) FROM "+b.chunks)).Scan(&next)
	if err != nil {
		return 0, 0, fmt.Errorf("baseline: read progress: %w", err)
	}
	n := 0
	if next.Valid {
		n = int(next.Int64) + 1
		if err := conn.QueryRowContext(ctx, b.eng.dialect().Rebind("SELECT last_key FROM "+b.chunks+" WHERE chunk = ?"), next.Int64).Scan(&last); err != nil {
			return 0, 0, fmt.Errorf("baseline: read progress: %w", err)
		}
		// Rows of a chunk without its summary cannot exist (same
		// transaction), but a manual edit could leave some: start clean.
		if _, err := conn.ExecContext(ctx, b.eng.dialect().Rebind("DELETE FROM "+b.rows+" WHERE chunk >= ?"), n); err != nil {
			return 0, 0, fmt.Errorf("baseline: %w", err)
		}
	} else if _, err := conn.ExecContext(ctx, "DELETE FROM "+b.rows); err != nil {
		return 0, 0, fmt.Errorf("baseline: %w", err)
	}
	for ; ; n++ {
		t0 := time.Now()
		got, lastKey, err := b.takeChunk(ctx, conn, n, last)
		if err != nil {
			return rows, chunks, fmt.Errorf("baseline chunk %d: %w", n, err)
		}
		if got == 0 {
			break
		}
		rows += got
		chunks++
		if b.afterChunk != nil {
			b.afterChunk(n)
		}
		last = sql.NullString{String: lastKey, Valid: true}
		if got < int64(b.chunk) {
			break
		}
		if err := sleep(ctx, time.Duration(float64(time.Since(t0))*baselinePause)); err != nil {
			return rows, chunks, err
		}
	}
	if b.eng == Postgres {
		// Statistics for verify's join over the whole baseline.
		if _, err := conn.ExecContext(ctx, "ANALYZE "+b.rows); err != nil {
			return rows, chunks, fmt.Errorf("baseline: %w", err)
		}
	}
	return rows, chunks, nil
}

func (b *baseliner) takeChunk(ctx context.Context, conn *sql.Conn, n int, last sql.NullString) (int64, string, error) {
	first := !last.Valid
	var args []any
	if !first {
		args = append(args, b.keyArg(last.String))
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return 0, "", err
	}
	defer tx.Rollback()

	var got int64
	switch b.eng {
	case Postgres:
		var lastKey string
		err := tx.QueryRowContext(ctx, b.eng.dialect().Rebind(b.pgChunkSQL(first)), append([]any{n}, args...)...).Scan(&lastKey, &got)
		if errors.Is(err, sql.ErrNoRows) {
			return 0, "", nil // past the last key
		}
		if err != nil {
			return 0, "", err
		}
		return got, lastKey, tx.Commit()
	default:
		// A plain SELECT: InnoDB reads a snapshot without locking rows
		// (an INSERT ... SELECT would lock every row it reads).
		keys, fps, err := b.readChunk(ctx, tx, first, args)
		if err != nil {
			return 0, "", err
		}
		got = int64(len(keys))
		const batch = 500 // small statements: short latch and lock holds on the server
		for i := 0; i < len(keys); i += batch {
			j := min(i+batch, len(keys))
			var sb strings.Builder
			sb.WriteString("INSERT INTO " + b.rows + " (user_key, chunk, fingerprint) VALUES ")
			vals := make([]any, 0, 3*(j-i))
			for k := i; k < j; k++ {
				if k > i {
					sb.WriteString(", ")
				}
				sb.WriteString("(?, ?, ?)")
				vals = append(vals, b.keyArg(keys[k]), n, fps[k])
			}
			if _, err := tx.ExecContext(ctx, sb.String(), vals...); err != nil {
				return 0, "", err
			}
		}
	}
	if got == 0 {
		return 0, "", nil
	}
	var cond any = n
	if !first {
		cond = args[0]
	}
	if b.eng == SQLite {
		if err := b.sqliteSummary(ctx, tx, n, first, cond); err != nil {
			return 0, "", err
		}
	} else if _, err := tx.ExecContext(ctx, b.eng.dialect().Rebind(b.summarySQL(first)), n, cond, cond, cond); err != nil {
		return 0, "", err
	}
	var lastKey string
	if err := tx.QueryRowContext(ctx, b.eng.dialect().Rebind("SELECT last_key FROM "+b.chunks+" WHERE chunk = ?"), n).Scan(&lastKey); err != nil {
		return 0, "", err
	}
	return got, lastKey, tx.Commit()
}

// readChunk reads keys and fingerprints (MySQL) or keys and hashes the
// password in Go (SQLite).
func (b *baseliner) readChunk(ctx context.Context, q querier, first bool, args []any) (keys []string, fps []any, err error) {
	rows, err := q.QueryContext(ctx, b.readSQL(first), args...)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var key string
		var v any
		if err := rows.Scan(&key, &v); err != nil {
			return nil, nil, err
		}
		keys = append(keys, key)
		if b.eng == SQLite {
			fps = append(fps, fingerprintValue(v))
		} else {
			fps = append(fps, nullableString(v))
		}
	}
	return keys, fps, rows.Err()
}

// fingerprintValue hashes a value read from SQLite: the exact stored bytes
// for TEXT and BLOB; NULL has no fingerprint.
func fingerprintValue(v any) any {
	var b []byte
	switch x := v.(type) {
	case nil:
		return nil
	case []byte:
		b = x
	case string:
		b = []byte(x)
	case time.Time: // a driver that parses dates: hash its text form
		b = []byte(x.Format(time.RFC3339Nano))
	default:
		b = []byte(fmt.Sprint(x))
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func nullableString(v any) any {
	switch x := v.(type) {
	case nil:
		return nil
	case []byte:
		return string(x)
	}
	return fmt.Sprint(v)
}

func (b *baseliner) sqliteSummary(ctx context.Context, tx *sql.Tx, n int, first bool, cond any) error {
	rows, err := tx.QueryContext(ctx, "SELECT "+b.keyText("r.user_key")+", r.fingerprint FROM "+b.rows+" r WHERE "+b.chunkCond(first)+" ORDER BY r.user_key", cond)
	if err != nil {
		return err
	}
	var firstKey, lastKey string
	var count int64
	h := sha256.New()
	for rows.Next() {
		var k string
		var fp sql.NullString
		if err := rows.Scan(&k, &fp); err != nil {
			rows.Close()
			return err
		}
		if count == 0 {
			firstKey = k
		} else {
			h.Write([]byte(","))
		}
		lastKey = k
		count++
		h.Write([]byte(k + ":" + orDash(fp)))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, "INSERT INTO "+b.chunks+" (chunk, first_key, last_key, row_count, checksum, taken_at) VALUES (?, ?, ?, ?, ?, ?)",
		n, firstKey, lastKey, count, hex.EncodeToString(h.Sum(nil)), time.Now().UTC())
	return err
}

func orDash(s sql.NullString) string {
	if !s.Valid {
		return "-"
	}
	return s.String
}
