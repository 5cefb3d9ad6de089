package migrate

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/passbridge/passbridge/schema"
)

// ExportInfo says where rollback --force put the passkeys.
type ExportInfo struct {
	Path   string `json:"path"`
	Count  int64  `json:"count"`
	SHA256 string `json:"sha256"`
}

// ExportFormat names the layout of an export file.
const ExportFormat = "passbridge-passkeys/1"

// Export is the file rollback --force writes: every column of every
// passkey (binary values in unpadded base64url, as WebAuthn writes them,
// times in RFC 3339 UTC), plus the users row's key, username and email and
// the directory identity, so that each passkey can be put back and
// re-linked after a new apply.
type Export struct {
	Format     string           `json:"format"`
	ExportedAt time.Time        `json:"exported_at"`
	Engine     Engine           `json:"engine"`
	UsersTable string           `json:"users_table"`
	UsersKey   string           `json:"users_key"`
	Count      int              `json:"count"`
	Passkeys   []map[string]any `json:"passkeys"`
}

func exportPathOrDefault(path string) string {
	if path != "" {
		return path
	}
	return "passbridge-passkeys-" + time.Now().UTC().Format("20060102T150405Z") + ".json"
}

// exportCredentials writes every row of the credentials table to a new
// file (never overwriting one), synced to disk before rollback goes on.
func (m *migrator) exportCredentials(ctx context.Context, q querier, path string) (*ExportInfo, error) {
	path = exportPathOrDefault(path)
	var cred schema.Table
	for _, t := range schema.Tables {
		if t.Name == "credentials" {
			cred = t
		}
	}
	b := m.eng
	keyText := func(expr string) string {
		switch b {
		case Postgres:
			return expr + "::text"
		case MySQL:
			return "CAST(" + expr + " AS CHAR)"
		}
		return "CAST(" + expr + " AS TEXT)"
	}
	var sel []string
	for _, c := range cred.Columns {
		if c.Type == schema.UserKey {
			sel = append(sel, keyText("c."+b.dialect().Quote(c.Name)))
			continue
		}
		sel = append(sel, "c."+b.dialect().Quote(c.Name))
	}
	userCol := func(name string) string {
		if name == "" {
			return "NULL"
		}
		return keyText("u." + b.dialect().Quote(name))
	}
	sel = append(sel, "i."+b.dialect().Quote("directory_id"), "i."+b.dialect().Quote("username"), "i."+b.dialect().Quote("email"),
		userCol(m.cfg.UsersTable.Username), userCol(m.cfg.UsersTable.Email))
	query := "SELECT " + strings.Join(sel, ", ") + " FROM " + m.names.Credentials + " c" +
		" LEFT JOIN " + m.names.Identities + " i ON i." + b.dialect().Quote("id") + " = c." + b.dialect().Quote("identity_id") +
		" LEFT JOIN " + m.names.Users + " u ON u." + m.names.UserKey + " = c." + b.dialect().Quote("user_key") +
		" ORDER BY c." + b.dialect().Quote("id")
	rows, err := q.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	ex := Export{Format: ExportFormat, ExportedAt: time.Now().UTC(), Engine: m.eng, UsersTable: m.users.Qualified, UsersKey: m.users.Key.Name}
	for rows.Next() {
		vals := make([]any, len(sel))
		ptrs := make([]any, len(sel))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		rec := map[string]any{}
		for i, c := range cred.Columns {
			rec[c.Name] = exportValue(c.Type, vals[i])
		}
		n := len(cred.Columns)
		rec["identity"] = map[string]any{"directory_id": exportValue(schema.Str, vals[n]), "username": exportValue(schema.Str, vals[n+1]), "email": exportValue(schema.Str, vals[n+2])}
		rec["user"] = map[string]any{"username": exportValue(schema.Str, vals[n+3]), "email": exportValue(schema.Str, vals[n+4])}
		ex.Passkeys = append(ex.Passkeys, rec)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	ex.Count = len(ex.Passkeys)
	data, err := json.MarshalIndent(ex, "", "  ")
	if err != nil {
		return nil, err
	}
	data = append(data, '\n')
	if err := writeNewFile(path, data); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	sum := sha256.Sum256(data)
	return &ExportInfo{Path: abs, Count: int64(ex.Count), SHA256: hex.EncodeToString(sum[:])}, nil
}

// exportValue makes a scanned value JSON-friendly and driver-independent.
func exportValue(t schema.Type, v any) any {
	switch x := v.(type) {
	case nil:
		return nil
	case []byte:
		if t == schema.Bytes || t == schema.Blob {
			return base64.RawURLEncoding.EncodeToString(x)
		}
		return exportValue(t, string(x))
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case string:
		switch t {
		case schema.Bytes, schema.Blob:
			return base64.RawURLEncoding.EncodeToString([]byte(x))
		case schema.Bool:
			return x == "1" || strings.EqualFold(x, "true")
		case schema.Int, schema.Ref, schema.ID:
			var n int64
			if _, err := fmt.Sscan(x, &n); err == nil {
				return n
			}
		}
		return x
	case int64:
		if t == schema.Bool {
			return x != 0
		}
		return x
	}
	return v
}

// writeNewFile writes data to a file that must not exist yet, mode 0600,
// and syncs it: the export is the only copy of the passkeys once rollback
// has run.
func writeNewFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create export file: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
