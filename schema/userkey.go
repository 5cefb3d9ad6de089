package schema

import "fmt"

// NormKey makes a users key as a driver returned it comparable, printable
// and fit to go back into a query as an argument: drivers return []byte
// for some column types, and int32 or int for others.
func NormKey(k any) any {
	switch v := k.(type) {
	case []byte:
		return string(v)
	case int32:
		return int64(v)
	case int:
		return int64(v)
	}
	return k
}

// KeyString is a normalized users key as text ("" for none).
func KeyString(k any) string {
	if k == nil {
		return ""
	}
	return fmt.Sprint(k)
}
