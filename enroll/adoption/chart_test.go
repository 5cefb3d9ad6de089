package adoption

import (
	"encoding/xml"
	"errors"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

// svgDoc is what the tests read back from a chart.
type svgDoc struct {
	root     xml.StartElement
	title    string
	desc     string
	texts    []string
	elements map[string]int
	attrs    []xml.Attr // every attribute of every element
	colors   map[string][]string
}

// parseSVG decodes the chart as XML, strictly: any malformed markup fails.
func parseSVG(t *testing.T, svg string) svgDoc {
	t.Helper()
	dec := xml.NewDecoder(strings.NewReader(svg))
	dec.Strict = true
	doc := svgDoc{elements: map[string]int{}, colors: map[string][]string{}}
	var stack []string
	var text strings.Builder
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("chart is not well-formed XML: %v\n%s", err, svg)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if len(stack) == 0 {
				if doc.root.Name.Local != "" {
					t.Fatalf("more than one root element")
				}
				doc.root = tok.Copy()
			}
			stack = append(stack, tok.Name.Local)
			doc.elements[tok.Name.Local]++
			doc.attrs = append(doc.attrs, tok.Attr...)
			for _, a := range tok.Attr {
				if a.Name.Local == "fill" || a.Name.Local == "stroke" {
					doc.colors[tok.Name.Local] = append(doc.colors[tok.Name.Local], a.Value)
				}
			}
			text.Reset()
		case xml.CharData:
			text.Write(tok)
		case xml.EndElement:
			switch tok.Name.Local {
			case "title":
				doc.title = text.String()
			case "desc":
				doc.desc = text.String()
			case "text":
				doc.texts = append(doc.texts, text.String())
			}
			stack = stack[:len(stack)-1]
			text.Reset()
		}
	}
	if len(stack) != 0 {
		t.Fatalf("unclosed elements %v", stack)
	}
	return doc
}

func (d svgDoc) attr(name string) string {
	for _, a := range d.root.Attr {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// checkChart checks what every chart must have: an accessible, self-
// contained SVG with finite coordinates and readable colours.
func checkChart(t *testing.T, svg string) svgDoc {
	t.Helper()
	d := parseSVG(t, svg)
	if d.root.Name.Local != "svg" || d.root.Name.Space != "http://www.w3.org/2000/svg" {
		t.Errorf("root is %v", d.root.Name)
	}
	if d.attr("role") != "img" {
		t.Errorf("role = %q", d.attr("role"))
	}
	if d.elements["title"] != 1 || d.title == "" || d.elements["desc"] != 1 || d.desc == "" {
		t.Errorf("title %q, desc %q", d.title, d.desc)
	}
	for _, id := range strings.Fields(d.attr("aria-labelledby")) {
		if !strings.Contains(svg, `id="`+id+`"`) {
			t.Errorf("aria-labelledby names %q, which is not in the chart", id)
		}
	}
	if !strings.Contains(d.attr("font-family"), "system-ui") {
		t.Errorf("font-family %q", d.attr("font-family"))
	}
	for _, banned := range []string{"script", "image", "foreignObject", "style", "use", "a"} {
		if d.elements[banned] != 0 {
			t.Errorf("chart has <%s>", banned)
		}
	}
	for _, a := range d.attrs {
		v := strings.ToLower(a.Value)
		if strings.HasPrefix(a.Name.Local, "on") || strings.Contains(v, "url(") || strings.Contains(v, "http:") && a.Name.Local != "xmlns" || strings.Contains(v, "https:") {
			t.Errorf("attribute %s=%q: script or external resource", a.Name.Local, a.Value)
		}
		if strings.Contains(v, "nan") || strings.Contains(v, "inf") {
			t.Errorf("attribute %s=%q: not a finite number", a.Name.Local, a.Value)
		}
	}
	for _, txt := range d.texts {
		if txt == "" {
			t.Error("empty <text>")
		}
	}
	// Text and the data line have enough contrast on the background.
	for _, c := range d.colors["text"] {
		if r := contrast(t, c, chartBackground); r < 4.5 {
			t.Errorf("text colour %s has contrast %.2f < 4.5", c, r)
		}
	}
	for _, el := range []string{"polyline", "circle"} {
		for _, c := range d.colors[el] {
			if c != "none" {
				if r := contrast(t, c, chartBackground); r < 3 {
					t.Errorf("%s colour %s has contrast %.2f < 3", el, c, r)
				}
			}
		}
	}
	return d
}

// contrast is the WCAG 2 contrast ratio of two #rrggbb colours.
func contrast(t *testing.T, a, b string) float64 {
	lum := func(hex string) float64 {
		if len(hex) != 7 || hex[0] != '#' {
			t.Fatalf("colour %q is not #rrggbb", hex)
		}
		var l float64
		for i, w := range []float64{0.2126, 0.7152, 0.0722} {
			v, err := strconv.ParseUint(hex[1+2*i:3+2*i], 16, 8)
			if err != nil {
				t.Fatalf("colour %q: %v", hex, err)
			}
			c := float64(v) / 255
			if c <= 0.03928 {
				c /= 12.92
			} else {
				c = math.Pow((c+0.055)/1.055, 2.4)
			}
			l += w * c
		}
		return l
	}
	la, lb := lum(a), lum(b)
	return (max(la, lb) + 0.05) / (min(la, lb) + 0.05)
}

func series(n int) []Point {
	var out []Point
	start := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		out = append(out, Point{Day: start.AddDate(0, 0, i), Users: i * 3 / 2, Passkeys: i * 2})
	}
	return out
}

func TestChartNoPoints(t *testing.T) {
	for _, pts := range [][]Point{nil, {}} {
		d := checkChart(t, string(Chart(pts, 720, 240)))
		if !strings.Contains(d.desc, "No enrollment data") {
			t.Errorf("desc %q", d.desc)
		}
		if d.elements["polyline"] != 0 || d.elements["circle"] != 0 {
			t.Error("a line without data")
		}
		if !contains(d.texts, "Enrolled users") || !contains(d.texts, "Day (UTC)") {
			t.Errorf("axis labels missing: %q", d.texts)
		}
	}
}

func TestChartOnePoint(t *testing.T) {
	pts := []Point{{Day: time.Date(2025, 3, 31, 0, 0, 0, 0, time.UTC), Users: 1, Passkeys: 2}}
	d := checkChart(t, string(Chart(pts, 720, 240)))
	if d.elements["circle"] != 1 || d.elements["polyline"] != 0 {
		t.Errorf("elements %v", d.elements)
	}
	if d.desc != "On 31 March 2025, 1 user had a passkey (2 passkeys in use)." {
		t.Errorf("desc %q", d.desc)
	}
	if !contains(d.texts, "2025-03-31") {
		t.Errorf("no date label: %q", d.texts)
	}
	// Nobody enrolled yet: still a scale, no division by zero.
	pts[0].Users, pts[0].Passkeys = 0, 0
	d = checkChart(t, string(Chart(pts, 720, 240)))
	if !contains(d.texts, "0") || !contains(d.texts, "1") {
		t.Errorf("y scale %q", d.texts)
	}
}

func TestChartManyPoints(t *testing.T) {
	pts := series(31)
	d := checkChart(t, string(Chart(pts, 720, 240)))
	if d.elements["polyline"] != 1 {
		t.Errorf("elements %v", d.elements)
	}
	want := "From 1 March 2025 to 31 March 2025, enrolled users went from 0 to 45 users (60 passkeys in use at the end)."
	if d.desc != want {
		t.Errorf("desc %q, want %q", d.desc, want)
	}
	for _, label := range []string{"2025-03-01", "2025-03-31", "0", "50", "Enrolled users", "Day (UTC)"} {
		if !contains(d.texts, label) {
			t.Errorf("no label %q in %q", label, d.texts)
		}
	}
	// A drop from a peak is told.
	pts[30].Users = 10
	d = checkChart(t, string(Chart(pts, 720, 240)))
	if !strings.Contains(d.desc, "The peak was 43 users on 30 March 2025.") {
		t.Errorf("desc %q", d.desc)
	}

	// A year of points, and sizes that are odd, tiny or absurd.
	year := series(366)
	for _, size := range [][2]int{{720, 240}, {0, 0}, {-5, 10}, {1, 1}, {100000, 100000}} {
		d := checkChart(t, string(Chart(year, size[0], size[1])))
		w, _ := strconv.Atoi(d.attr("width"))
		h, _ := strconv.Atoi(d.attr("height"))
		if w < chartMinWidth || h < chartMinHeight || w > chartMaxSide || h > chartMaxSide {
			t.Errorf("size %v drawn as %dx%d", size, w, h)
		}
	}
}

// Two charts on one page do not share ids.
func TestChartIDsAreUnique(t *testing.T) {
	a, b := checkChart(t, string(Chart(nil, 0, 0))), checkChart(t, string(Chart(nil, 0, 0)))
	if a.attr("aria-labelledby") == b.attr("aria-labelledby") {
		t.Errorf("both charts use %q", a.attr("aria-labelledby"))
	}
}

func TestYTicks(t *testing.T) {
	for _, c := range []struct{ max, ticks, step, top int }{
		{0, 5, 1, 1}, {1, 5, 1, 1}, {4, 5, 1, 4}, {7, 5, 2, 8}, {45, 5, 10, 50}, {45, 0, 50, 50}, {1234, 6, 500, 1500},
	} {
		step, top := yTicks(c.max, c.ticks)
		if step != c.step || top != c.top {
			t.Errorf("yTicks(%d, %d) = %d, %d; want %d, %d", c.max, c.ticks, step, top, c.step, c.top)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestBarChart: the funnel chart is a well-formed, accessible SVG whose
// description states every bar, with hostile labels escaped, the longest
// bar the full width, and no bar for zero.
func TestBarChart(t *testing.T) {
	bars := []Bar{{"invited", 40}, {"delivered", 38}, {`<script>"&`, 10}, {"enrolled", 0}}
	svg := string(BarChart("Campaign pilot: funnel", bars, 600))
	d := checkChart(t, svg)
	if d.title != "Campaign pilot: funnel" {
		t.Errorf("title %q", d.title)
	}
	for _, want := range []string{"invited: 40", "delivered: 38", `<script>"&: 10`, "enrolled: 0"} {
		if !strings.Contains(d.desc, want) {
			t.Errorf("desc %q lacks %q", d.desc, want)
		}
	}
	if strings.Contains(svg, "<script>") {
		t.Error("a label reached the SVG unescaped")
	}
	for _, c := range d.colors["rect"][1:] {
		if r := contrast(t, c, chartBackground); r < 3 {
			t.Errorf("bar colour %s has contrast %.2f < 3", c, r)
		}
	}
	if !strings.Contains(svg, `width="370.0"`) || !strings.Contains(svg, `width="0.0"`) {
		t.Errorf("want the longest bar 370 px wide (600-170-60) and a zero bar:\n%s", svg)
	}
	if d := checkChart(t, string(BarChart("empty", nil, 0))); d.desc != "No figures yet." {
		t.Errorf("empty chart desc %q", d.desc)
	}
}
