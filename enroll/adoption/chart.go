package adoption

import (
	"fmt"
	"html/template"
	"strconv"
	"strings"
	"sync/atomic"
)

// Chart colours: every one has at least 4.5:1 contrast on the white
// background the chart draws itself (WCAG AA for text), the line more than
// 3:1 as a graphical object needs; the grid is decoration.
const (
	chartBackground = "#ffffff"
	chartText       = "#1f2328" // 15.8:1
	chartAxis       = "#57606a" // 6.4:1
	chartGrid       = "#d0d7de"
	chartLine       = "#0a4f9e" // 8.0:1
	chartFill       = "#0a4f9e"
	chartFont       = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
)

// Chart bounds: smaller sizes are raised to these, 0 or less means the
// default.
const (
	chartMinWidth, chartMinHeight         = 240, 140
	chartDefaultWidth, chartDefaultHeight = 720, 240
	chartMaxSide                          = 4096
)

// chartSeq makes the ids of each chart's title and description unique on a
// page that shows more than one.
var chartSeq atomic.Uint64

// Chart draws the enrolled users of points over time as an inline SVG of
// width × height pixels: self-contained (no script, no external resource,
// system fonts), accessible (role="img" with a <title> and a <desc> that
// states the figures), with labelled axes. It draws an empty chart that
// says so for no points, a single dot for one point, a line for more.
func Chart(points []Point, width, height int) template.HTML {
	w := clampSide(width, chartDefaultWidth, chartMinWidth)
	h := clampSide(height, chartDefaultHeight, chartMinHeight)
	id := "passbridge-chart-" + strconv.FormatUint(chartSeq.Add(1), 10)

	// The plot area, inside margins for the tick labels and axis titles.
	const left, right, top, bottom = 56.0, 40.0, 12.0, 44.0
	pw, ph := float64(w)-left-right, float64(h)-top-bottom
	x0, y0 := left, top+ph // the origin, bottom left

	maxUsers := 0
	for _, p := range points {
		maxUsers = max(maxUsers, p.Users)
	}
	step, yMax := yTicks(maxUsers, int(ph/28))
	yOf := func(v int) float64 { return y0 - float64(v)/float64(yMax)*ph }
	xOf := func(i int) float64 {
		if len(points) <= 1 {
			return x0 + pw/2
		}
		return x0 + float64(i)/float64(len(points)-1)*pw
	}

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" class="adoption-chart" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-labelledby="%s-title %s-desc" font-family="%s" font-size="12">`,
		w, h, w, h, id, id, esc(chartFont))
	fmt.Fprintf(&b, `<title id="%s-title">Passkey enrollment: enrolled users over time</title>`, id)
	fmt.Fprintf(&b, `<desc id="%s-desc">%s</desc>`, id, esc(describe(points)))
	fmt.Fprintf(&b, `<rect x="0" y="0" width="%d" height="%d" fill="%s"/>`, w, h, chartBackground)

	// Horizontal grid lines with the y tick labels.
	b.WriteString(`<g aria-hidden="true">`)
	for v := 0; v <= yMax; v += step {
		y := yOf(v)
		if v > 0 {
			fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="1"/>`, f(x0), f(y), f(x0+pw), f(y), chartGrid)
		}
		fmt.Fprintf(&b, `<text x="%s" y="%s" text-anchor="end" dominant-baseline="middle" fill="%s">%d</text>`, f(x0-6), f(y), chartText, v)
	}
	// The axes.
	fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="1"/>`, f(x0), f(top), f(x0), f(y0), chartAxis)
	fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="1"/>`, f(x0), f(y0), f(x0+pw), f(y0), chartAxis)
	// Date labels, centred under their day: as many as fit, always the
	// first and the last.
	for _, i := range xLabels(len(points), int(pw/100)) {
		fmt.Fprintf(&b, `<text x="%s" y="%s" text-anchor="middle" fill="%s">%s</text>`, f(xOf(i)), f(y0+16), chartText, points[i].Day.Format("2006-01-02"))
	}
	// Axis titles.
	fmt.Fprintf(&b, `<text x="%s" y="%s" text-anchor="middle" fill="%s">Day (UTC)</text>`, f(x0+pw/2), f(float64(h)-6), chartText)
	fmt.Fprintf(&b, `<text x="14" y="%s" text-anchor="middle" fill="%s" transform="rotate(-90 14 %s)">Enrolled users</text>`, f(top+ph/2), chartText, f(top+ph/2))
	b.WriteString(`</g>`)

	switch len(points) {
	case 0:
		fmt.Fprintf(&b, `<text x="%s" y="%s" text-anchor="middle" dominant-baseline="middle" fill="%s" aria-hidden="true">No enrollment data yet</text>`, f(x0+pw/2), f(top+ph/2), chartText)
	case 1:
		fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="4" fill="%s"/>`, f(xOf(0)), f(yOf(points[0].Users)), chartLine)
	default:
		var line strings.Builder
		for i, p := range points {
			if i > 0 {
				line.WriteByte(' ')
			}
			line.WriteString(f(xOf(i)) + "," + f(yOf(p.Users)))
		}
		fmt.Fprintf(&b, `<polygon points="%s,%s %s %s,%s" fill="%s" fill-opacity="0.12" stroke="none"/>`,
			f(xOf(0)), f(y0), line.String(), f(xOf(len(points)-1)), f(y0), chartFill)
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2" stroke-linejoin="round" stroke-linecap="round"/>`, line.String(), chartLine)
		last := points[len(points)-1]
		fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="3.5" fill="%s"/>`, f(xOf(len(points)-1)), f(yOf(last.Users)), chartLine)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // every value in it is escaped or a number
}

func clampSide(v, def, least int) int {
	switch {
	case v <= 0:
		return def
	case v < least:
		return least
	case v > chartMaxSide:
		return chartMaxSide
	}
	return v
}

// yTicks picks a step of 1, 2 or 5 × 10^k users so that at most maxTicks
// steps cover maxUsers, and the top of the scale (a multiple of the step,
// at least 1).
func yTicks(maxUsers, maxTicks int) (step, top int) {
	maxTicks = max(maxTicks, 1)
	maxUsers = max(maxUsers, 1)
	for mag := 1; ; mag *= 10 {
		for _, m := range []int{1, 2, 5} {
			step = m * mag
			if (maxUsers+step-1)/step <= maxTicks {
				return step, (maxUsers + step - 1) / step * step
			}
		}
	}
}

// xLabels picks up to fit indexes of n points to label, evenly spread,
// always the first and (for more than one point) the last.
func xLabels(n, fit int) []int {
	if n == 0 {
		return nil
	}
	if n == 1 {
		return []int{0}
	}
	fit = min(max(fit, 2), n)
	out := make([]int, 0, fit)
	for k := range fit {
		i := k * (n - 1) / (fit - 1)
		if len(out) == 0 || out[len(out)-1] != i {
			out = append(out, i)
		}
	}
	return out
}

// describe states the series in words for the <desc>.
func describe(points []Point) string {
	if len(points) == 0 {
		return "No enrollment data yet."
	}
	first, last := points[0], points[len(points)-1]
	peak := first
	for _, p := range points {
		if p.Users > peak.Users {
			peak = p
		}
	}
	users := func(n int) string {
		if n == 1 {
			return "1 user"
		}
		return strconv.Itoa(n) + " users"
	}
	passkeys := func(n int) string {
		if n == 1 {
			return "1 passkey"
		}
		return strconv.Itoa(n) + " passkeys"
	}
	day := func(p Point) string { return p.Day.Format("2 January 2006") }
	if len(points) == 1 {
		return fmt.Sprintf("On %s, %s had a passkey (%s in use).", day(last), users(last.Users), passkeys(last.Passkeys))
	}
	s := fmt.Sprintf("From %s to %s, enrolled users went from %s to %s (%s in use at the end).",
		day(first), day(last), strconv.Itoa(first.Users), users(last.Users), passkeys(last.Passkeys))
	if peak.Users > last.Users {
		s += fmt.Sprintf(" The peak was %s on %s.", users(peak.Users), day(peak))
	}
	return s
}

// f formats a coordinate with at most one decimal.
func f(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

func esc(s string) string { return template.HTMLEscapeString(s) }

// Bar is one bar of a BarChart: a label and a count of people.
type Bar struct {
	Label string
	Value int
}

// BarChart draws horizontal bars (a campaign's funnel) as an inline SVG of
// width pixels: self-contained and accessible like Chart (role="img", a
// <title>, and a <desc> that states every figure), each bar labelled with
// its name and its value, the longest bar the whole width.
func BarChart(title string, bars []Bar, width int) template.HTML {
	w := clampSide(width, chartDefaultWidth, chartMinWidth)
	const rowH, top, labelW, valueW = 28.0, 8.0, 170.0, 60.0
	h := int(top*2 + rowH*float64(max(len(bars), 1)))
	id := "passbridge-chart-" + strconv.FormatUint(chartSeq.Add(1), 10)
	most := 1
	for _, b := range bars {
		most = max(most, b.Value)
	}
	pw := float64(w) - labelW - valueW
	var desc []string
	for _, b := range bars {
		desc = append(desc, fmt.Sprintf("%s: %d", b.Label, b.Value))
	}
	text := strings.Join(desc, "; ") + "."
	if len(desc) == 0 {
		text = "No figures yet."
	}
	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" class="adoption-chart" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-labelledby="%s-title %s-desc" font-family="%s" font-size="12">`,
		w, h, w, h, id, id, esc(chartFont))
	fmt.Fprintf(&s, `<title id="%s-title">%s</title>`, id, esc(title))
	fmt.Fprintf(&s, `<desc id="%s-desc">%s</desc>`, id, esc(text))
	fmt.Fprintf(&s, `<rect x="0" y="0" width="%d" height="%d" fill="%s"/>`, w, h, chartBackground)
	s.WriteString(`<g aria-hidden="true">`)
	for i, b := range bars {
		y := top + rowH*float64(i)
		bw := pw * float64(max(b.Value, 0)) / float64(most)
		fmt.Fprintf(&s, `<text x="%s" y="%s" text-anchor="end" dominant-baseline="middle" fill="%s">%s</text>`, f(labelW-8), f(y+rowH/2), chartText, esc(b.Label))
		fmt.Fprintf(&s, `<rect x="%s" y="%s" width="%s" height="%s" fill="%s"/>`, f(labelW), f(y+4), f(bw), f(rowH-8), chartLine)
		fmt.Fprintf(&s, `<text x="%s" y="%s" dominant-baseline="middle" fill="%s">%d</text>`, f(labelW+bw+6), f(y+rowH/2), chartText, b.Value)
	}
	s.WriteString(`</g></svg>`)
	return template.HTML(s.String()) // every value in it is escaped or a number
}
