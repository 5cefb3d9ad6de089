package store

import (
	"errors"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Errors of the three drivers, classified.

// IsUniqueViolation reports whether err is a duplicate key: a unique index
// or primary key of any of the three databases.
func IsUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	var me *mysql.MySQLError
	var se *sqlite.Error
	switch {
	case errors.As(err, &pe):
		return pe.Code == "23505"
	case errors.As(err, &me):
		return me.Number == 1062 || me.Number == 1586 // ER_DUP_ENTRY, ER_DUP_ENTRY_WITH_KEY_NAME
	case errors.As(err, &se):
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// IsRetryable reports whether err is a lost lock race that may succeed when
// the transaction is tried again: a lock timeout (see WithLockTimeout), a
// deadlock, a serialization failure, or SQLite busy or locked.
func IsRetryable(err error) bool {
	var pe *pgconn.PgError
	var me *mysql.MySQLError
	var se *sqlite.Error
	switch {
	case errors.As(err, &pe):
		// serialization_failure, deadlock_detected, lock_not_available
		return pe.Code == "40001" || pe.Code == "40P01" || pe.Code == "55P03"
	case errors.As(err, &me):
		return me.Number == 1205 || me.Number == 1213 // lock wait timeout, deadlock
	case errors.As(err, &se):
		primary := se.Code() & 0xff // extended codes carry the primary one in the low byte
		return primary == sqlite3.SQLITE_BUSY || primary == sqlite3.SQLITE_LOCKED
	}
	return false
}

// permanent reports a connection error that retrying cannot fix: wrong
// credentials, a missing database, an unusable SQLite file.
func (d Dialect) permanent(err error) bool {
	var pe *pgconn.PgError
	var me *mysql.MySQLError
	switch {
	case d.kind == SQLite:
		return true
	case errors.As(err, &pe):
		// invalid_password, invalid_authorization_specification,
		// invalid_catalog_name (no such database)
		return pe.Code == "28P01" || pe.Code == "28000" || pe.Code == "3D000"
	case errors.As(err, &me):
		// access denied (user, database), unknown database
		return me.Number == 1045 || me.Number == 1044 || me.Number == 1049 || me.Number == 1698
	}
	return false
}

// ErrCommitUnknown is matched (errors.Is) by the error of a COMMIT that the
// database never answered: the connection broke after the COMMIT went out,
// so the transaction may have committed or not. Only a later read can tell.
var ErrCommitUnknown = errors.New("the database's answer to COMMIT was lost: the transaction may or may not have committed")

// serverAnswered reports whether err is the database's own answer (an
// error it sent: the transaction did not commit), not a broken connection.
func serverAnswered(err error) bool {
	var pe *pgconn.PgError
	var me *mysql.MySQLError
	var se *sqlite.Error
	return errors.As(err, &pe) || errors.As(err, &me) || errors.As(err, &se)
}
