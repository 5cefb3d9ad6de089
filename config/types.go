package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a time.Duration written in YAML as "30s", "5m", "1h30m".
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := parseDuration(n.Value)
	if err != nil {
		return valueError(n, err)
	}
	*d = v
	return nil
}

func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// valueError is a value of the wrong shape as a YAML type error, which the
// decoder collects with the others and which decodeStrict prints with the
// file and the line (a plain error would stop the decoding at the first
// bad value, without saying where it is).
func valueError(n *yaml.Node, err error) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
}

func parseDuration(s string) (Duration, error) {
	v, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("expected a duration such as 30s, 5m or 1h (got %q)", s)
	}
	if v < 0 {
		return 0, fmt.Errorf("expected a positive duration (got %q)", s)
	}
	return Duration(v), nil
}

// Secret is a string that never prints: String, MarshalYAML and slog all see
// a mask. Use Reveal where the value is really needed.
type Secret string

const mask = "********"

// Reveal returns the secret value.
func (s Secret) Reveal() string { return string(s) }

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return mask
}

// LogValue keeps secrets out of slog output even when logged by mistake.
func (s Secret) LogValue() any { return s.String() }

func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

func (s Secret) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(s.String())), nil }

// Threshold is a limit given as a count ("50") or a percentage ("5%").
type Threshold struct {
	Count   int
	Percent float64
	IsPct   bool
}

// Exceeded reports whether n changes out of total go over the threshold.
func (t Threshold) Exceeded(n, total int) bool {
	if t.IsPct {
		if total == 0 {
			return n > 0 && t.Percent < 100
		}
		return float64(n)*100 > t.Percent*float64(total)
	}
	return n > t.Count
}

// Limit returns the largest allowed n out of total.
func (t Threshold) Limit(total int) int {
	if t.IsPct {
		return int(t.Percent * float64(total) / 100)
	}
	return t.Count
}

func (t Threshold) String() string {
	if t.IsPct {
		return strconv.FormatFloat(t.Percent, 'f', -1, 64) + "%"
	}
	return strconv.Itoa(t.Count)
}

func (t *Threshold) UnmarshalYAML(n *yaml.Node) error {
	v, err := parseThreshold(n.Value)
	if err != nil {
		return valueError(n, err)
	}
	*t = v
	return nil
}

func (t Threshold) MarshalYAML() (any, error) { return t.String(), nil }

func parseThreshold(s string) (Threshold, error) {
	s = strings.TrimSpace(s)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		// !(0 <= f <= 100) also refuses NaN, which would compare false
		// with everything and so switch the deletion limit off.
		if err != nil || !(f >= 0 && f <= 100) {
			return Threshold{}, fmt.Errorf("expected a count such as 50 or a percentage such as 5%% (got %q)", s)
		}
		return Threshold{Percent: f, IsPct: true}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return Threshold{}, fmt.Errorf("expected a count such as 50 or a percentage such as 5%% (got %q)", s)
	}
	return Threshold{Count: n}, nil
}
