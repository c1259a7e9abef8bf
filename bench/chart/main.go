// Command chart draws the benchmark results as an SVG: two grouped bar
// charts, ns per operation and peak RSS, with a group per workload (trace)
// and a bar per allocator.
//
//	go run ./bench/chart -i bench/c/results.jsonl -o docs/bench.svg
//	go run ./bench/chart -i bench/c/results.jsonl -i /tmp/replay.jsonl \
//	    -allocators zend,zmm,glibc,jemalloc,mimalloc,go,modernc -o docs/bench.svg
//
// Input: JSON lines, one object per run, as the C harness (bench/c/run.sh)
// and BenchmarkReplay -results write them. The fields read:
//
//	allocator       string, required
//	trace           string (or "workload"), required; a trace's file name
//	                loses its .ztrace.gz or .ztrace suffix
//	ns_per_op       number, required, > 0
//	peak_rss_bytes  number; a row without it (or with 0) has no bar in the
//	                peak RSS chart
//
// Other fields are ignored, as are blank lines and lines starting with #.
// Several rows of one file for one allocator and workload (repeated runs)
// are combined into their median; when several files have rows for the
// same allocator and workload, the first file given wins (so zmm's figures
// come from the C harness's run when its file comes first, and a Go
// benchmark file adds only the allocators the harness does not have).
// -allocators and -workloads pick the bars and their order (default: all,
// in the order they first appear); -scale is log, linear or auto (log when
// a chart's values span more than 30 times).
//
// Standard library only.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "chart:", err)
		os.Exit(2)
	}
}

// listFlag is a flag that may be given several times, each value a comma
// list.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("chart", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var inputs, allocators listFlag
	fs.Var(&inputs, "i", "input JSON lines file (repeatable, or a comma list; - is standard input)")
	fs.Var(&allocators, "allocators", "allocators to draw, in this order (comma list; default all)")
	var workloads listFlag
	fs.Var(&workloads, "workloads", "workloads (traces) to draw, in this order (comma list; default all)")
	out := fs.String("o", "-", "output SVG file (- is standard output)")
	title := fs.String("title", "zmm and its peers: trace replay", "title above the charts")
	scale := fs.String("scale", "auto", "value axis: auto, log or linear")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if len(inputs) == 0 {
		return errors.New("no input: give -i FILE")
	}
	switch *scale {
	case "auto", "log", "linear":
	default:
		return fmt.Errorf("-scale %q: want auto, log or linear", *scale)
	}
	var rows []row
	for i, in := range inputs {
		rs, err := readFile(in)
		if err != nil {
			return err
		}
		for j := range rs {
			rs[j].file = i
		}
		rows = append(rows, rs...)
	}
	d, err := build(rows, allocators, workloads)
	if err != nil {
		return err
	}
	svg := render(d, *title, *scale)
	if *out == "-" {
		_, err := stdout.Write(svg)
		return err
	}
	return os.WriteFile(*out, svg, 0o644)
}

// row is one input line.
type row struct {
	allocator, workload string
	nsPerOp             float64
	peakRSS             float64 // bytes; 0 when absent
	file                int     // which input it came from
}

type jsonRow struct {
	Allocator string   `json:"allocator"`
	Trace     string   `json:"trace"`
	Workload  string   `json:"workload"`
	NsPerOp   *float64 `json:"ns_per_op"`
	PeakRSS   *float64 `json:"peak_rss_bytes"`
}

func readFile(path string) ([]row, error) {
	if path == "-" {
		return readRows(os.Stdin, "stdin")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readRows(f, path)
}

// readRows reads JSON lines; errors name the file and line.
func readRows(r io.Reader, name string) ([]row, error) {
	var rows []row
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		var j jsonRow
		if err := json.Unmarshal(line, &j); err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, n, err)
		}
		w := j.Trace
		if w == "" {
			w = j.Workload
		}
		w = strings.TrimSuffix(strings.TrimSuffix(w, ".gz"), ".ztrace")
		switch {
		case j.Allocator == "":
			return nil, fmt.Errorf("%s:%d: no allocator", name, n)
		case w == "":
			return nil, fmt.Errorf("%s:%d: no trace or workload", name, n)
		case j.NsPerOp == nil || !(*j.NsPerOp > 0) || math.IsInf(*j.NsPerOp, 0):
			return nil, fmt.Errorf("%s:%d: ns_per_op missing or not a positive number", name, n)
		}
		rw := row{allocator: j.Allocator, workload: w, nsPerOp: *j.NsPerOp}
		if j.PeakRSS != nil && *j.PeakRSS > 0 && !math.IsInf(*j.PeakRSS, 0) {
			rw.peakRSS = *j.PeakRSS
		}
		rows = append(rows, rw)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return rows, nil
}

// data is what the charts show: values[w][a] for workload w and allocator
// a, NaN where there is none.
type data struct {
	workloads, allocators []string
	ns, rss               [][]float64
}

// build combines the rows: the median of repeated rows of the first file
// that has them, the allocators and workloads filtered and ordered by
// wantA and wantW (when given).
func build(rows []row, wantA, wantW []string) (*data, error) {
	if len(rows) == 0 {
		return nil, errors.New("no rows in the input")
	}
	d := &data{}
	type key struct{ w, a string }
	ns := map[key][]float64{}
	rss := map[key][]float64{}
	from := map[key]int{} // the file the key's rows come from
	for _, r := range rows {
		if len(wantA) > 0 && !slices.Contains(wantA, r.allocator) ||
			len(wantW) > 0 && !slices.Contains(wantW, r.workload) {
			continue
		}
		k := key{r.workload, r.allocator}
		if f, ok := from[k]; ok && f != r.file {
			continue
		}
		from[k] = r.file
		if !slices.Contains(d.workloads, r.workload) {
			d.workloads = append(d.workloads, r.workload)
		}
		if !slices.Contains(d.allocators, r.allocator) {
			d.allocators = append(d.allocators, r.allocator)
		}
		ns[k] = append(ns[k], r.nsPerOp)
		if r.peakRSS > 0 {
			rss[k] = append(rss[k], r.peakRSS)
		}
	}
	d.allocators = reorder(d.allocators, wantA)
	d.workloads = reorder(d.workloads, wantW)
	if len(d.allocators) == 0 || len(d.workloads) == 0 {
		return nil, fmt.Errorf("no rows of the allocators %q and workloads %q in the input", wantA, wantW)
	}
	for _, w := range d.workloads {
		var nsRow, rssRow []float64
		for _, a := range d.allocators {
			nsRow = append(nsRow, median(ns[key{w, a}]))
			rssRow = append(rssRow, median(rss[key{w, a}]))
		}
		d.ns = append(d.ns, nsRow)
		d.rss = append(d.rss, rssRow)
	}
	return d, nil
}

// reorder returns have in the order of want, when want is given.
func reorder(have, want []string) []string {
	if len(want) == 0 {
		return have
	}
	var order []string
	for _, a := range want {
		if slices.Contains(have, a) && !slices.Contains(order, a) {
			order = append(order, a)
		}
	}
	return order
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}

// ---------------------------------------------------------------------------
// Drawing

// Layout, in SVG user units (pixels).
const (
	barW      = 18.0  // a bar's width
	barGap    = 2.0   // between the bars of a group
	groupGap  = 28.0  // between groups
	leftM     = 84.0  // room for the value axis and its label
	rightM    = 24.0  // right margin
	plotH     = 260.0 // a plot's height
	headroom  = 64.0  // above a plot: its title and the value labels of the tallest bars
	footer    = 56.0  // below a plot: the workload names and the axis label
	titleH    = 40.0  // the document title
	legendRow = 22.0  // a row of the legend
	minPlotW  = 420.0
	fontStack = "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif"
)

// colours of the allocators the project compares; others take the
// fallback palette in order.
var knownColours = map[string]string{
	"zmm":      "#e4572e",
	"zend":     "#6f4e9e",
	"glibc":    "#4c78a8",
	"jemalloc": "#72b7b2",
	"mimalloc": "#54a24b",
	"go":       "#00add8",
	"modernc":  "#b279a2",
	"arena":    "#9d755d",
	"pool":     "#bab0ac",
}

var fallbackColours = []string{"#f58518", "#eeca3b", "#ff9da6", "#439894", "#88d27a", "#d6a5c9", "#83bcb6", "#79706e"}

func colours(allocators []string) map[string]string {
	c := map[string]string{}
	next := 0
	for _, a := range allocators {
		if k, ok := knownColours[a]; ok {
			c[a] = k
		} else {
			c[a] = fallbackColours[next%len(fallbackColours)]
			next++
		}
	}
	return c
}

// axis maps values to heights within a plot.
type axis struct {
	log      bool
	lo, hi   float64 // the range shown (log: powers of 10)
	ticks    []float64
	describe string // "log scale" or "linear scale"
}

// newAxis picks the scale for values (NaNs ignored): log when asked, or
// with auto when they span more than 30 times; linear from 0 otherwise.
func newAxis(values []float64, mode string) axis {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range values {
		if !math.IsNaN(v) {
			lo, hi = min(lo, v), max(hi, v)
		}
	}
	if math.IsInf(lo, 1) { // no values
		lo, hi = 1, 10
	}
	useLog := mode == "log" || (mode == "auto" && hi/lo > 30)
	if useLog {
		a := axis{log: true, describe: "log scale"}
		a.lo = math.Pow(10, math.Floor(math.Log10(lo)))
		a.hi = math.Pow(10, math.Ceil(math.Log10(hi)))
		if a.hi <= a.lo {
			a.hi = a.lo * 10
		}
		for t := a.lo; t <= a.hi*1.0001; t *= 10 {
			a.ticks = append(a.ticks, t)
		}
		return a
	}
	a := axis{describe: "linear scale"}
	step := niceStep(hi / 5)
	a.hi = math.Ceil(hi/step) * step
	if a.hi <= 0 {
		a.hi = 1
		step = 0.2
	}
	for i := 0; ; i++ {
		t := float64(i) * step
		if t > a.hi*1.0001 {
			break
		}
		a.ticks = append(a.ticks, t)
	}
	return a
}

// niceStep rounds x up to 1, 2 or 5 times a power of 10.
func niceStep(x float64) float64 {
	if !(x > 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}

// frac is where v sits on the axis, 0 at the bottom and 1 at the top.
func (a axis) frac(v float64) float64 {
	var f float64
	if a.log {
		f = (math.Log10(v) - math.Log10(a.lo)) / (math.Log10(a.hi) - math.Log10(a.lo))
	} else {
		f = v / a.hi
	}
	return min(max(f, 0), 1)
}

// panel is one of the two charts.
type panel struct {
	title, unit string
	values      [][]float64          // [workload][allocator]
	metric      string               // the JSON field, for the bars' data-metric
	div         float64              // the axis shows values/div (bytes as MiB)
	format      func(float64) string // a bar's value label
	tickFormat  func(float64) string // an axis tick, in axis units
}

func render(d *data, title, scale string) []byte {
	nA, nW := len(d.allocators), len(d.workloads)
	groupW := float64(nA)*barW + float64(nA-1)*barGap
	plotW := max(minPlotW, float64(nW)*(groupW+groupGap))
	width := leftM + plotW + rightM
	col := colours(d.allocators)

	// The legend wraps into rows that fit the width.
	type item struct {
		name string
		x, y float64
	}
	var legend []item
	x, y := leftM, titleH+4
	for _, a := range d.allocators {
		w := 28 + 7.5*float64(len(a))
		if x+w > width-rightM && x > leftM {
			x, y = leftM, y+legendRow
		}
		legend = append(legend, item{a, x, y})
		x += w + 14
	}
	top := y + legendRow + 8

	panels := []panel{
		{"Time per trace operation", "ns per operation", d.ns, "ns_per_op", 1, fmtNs, fmtNsTick},
		{"Peak resident memory", "peak RSS (MiB)", d.rss, "peak_rss_bytes", 1 << 20, fmtBytes, fmtTick},
	}
	panelH := headroom + plotH + footer
	height := top + float64(len(panels))*panelH + 8

	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="%s">`+"\n",
		width, height, width, height, fontStack)
	b.WriteString(`<style>.grid{stroke:#ddd;stroke-width:1}.axis{stroke:#333;stroke-width:1}.tick{font-size:11px;fill:#333}` +
		`.val{font-size:10px;fill:#222}.wl{font-size:12px;fill:#111}.lab{font-size:12px;fill:#333}.pt{font-size:14px;font-weight:600;fill:#111}</style>` + "\n")
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#fff"/>`+"\n")
	fmt.Fprintf(&b, `<text class="title" x="%.1f" y="26" font-size="18" font-weight="700" fill="#111">%s</text>`+"\n", leftM, esc(title))
	b.WriteString(`<g class="legend">` + "\n")
	for _, it := range legend {
		fmt.Fprintf(&b, `<rect class="swatch" x="%.1f" y="%.1f" width="14" height="14" fill="%s"/><text class="lab" x="%.1f" y="%.1f">%s</text>`+"\n",
			it.x, it.y, col[it.name], it.x+19, it.y+11.5, esc(it.name))
	}
	b.WriteString("</g>\n")

	for pi, p := range panels {
		var all []float64
		for _, r := range p.values {
			for _, v := range r {
				all = append(all, v/p.div)
			}
		}
		ax := newAxis(all, scale)
		y0 := top + float64(pi)*panelH // the panel's top
		plotTop := y0 + headroom
		plotBottom := plotTop + plotH
		fmt.Fprintf(&b, `<g class="panel" data-metric="%s">`+"\n", p.metric)
		fmt.Fprintf(&b, `<text class="pt" x="%.1f" y="%.1f">%s (%s)</text>`+"\n", leftM, y0+18, esc(p.title), ax.describe)
		// Grid and value axis.
		for _, t := range ax.ticks {
			ty := plotBottom - ax.frac(t)*plotH
			fmt.Fprintf(&b, `<line class="grid" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`, leftM, ty, leftM+plotW, ty)
			fmt.Fprintf(&b, `<text class="tick" x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", leftM-6, ty+4, esc(p.tickFormat(t)))
		}
		fmt.Fprintf(&b, `<line class="axis" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`, leftM, plotTop, leftM, plotBottom)
		fmt.Fprintf(&b, `<line class="axis" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`+"\n", leftM, plotBottom, leftM+plotW, plotBottom)
		cy := plotTop + plotH/2
		fmt.Fprintf(&b, `<text class="lab axis-label" x="%.1f" y="%.1f" text-anchor="middle" transform="rotate(-90 %.1f %.1f)">%s, %s</text>`+"\n",
			18.0, cy, 18.0, cy, esc(p.unit), ax.describe)
		// Groups.
		startX := leftM + (plotW-float64(nW)*(groupW+groupGap))/2 + groupGap/2
		for wi, w := range d.workloads {
			gx := startX + float64(wi)*(groupW+groupGap)
			for ai, a := range d.allocators {
				v := p.values[wi][ai]
				if math.IsNaN(v) {
					continue
				}
				bx := gx + float64(ai)*(barW+barGap)
				h := max(ax.frac(v/p.div)*plotH, 1)
				by := plotBottom - h
				label := p.format(v)
				fmt.Fprintf(&b, `<rect class="bar" data-allocator="%s" data-workload="%s" data-metric="%s" data-value="%g" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s on %s: %s</title></rect>`+"\n",
					esc(a), esc(w), p.metric, v, bx, by, barW, h, col[a], esc(a), esc(w), esc(label))
				tx, ty := bx+barW/2+3.5, by-4
				fmt.Fprintf(&b, `<text class="val" x="%.1f" y="%.1f" transform="rotate(-90 %.1f %.1f)">%s</text>`+"\n", tx, ty, tx, ty, esc(label))
			}
			fmt.Fprintf(&b, `<text class="wl" x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", gx+groupW/2, plotBottom+18, esc(w))
		}
		fmt.Fprintf(&b, `<text class="lab axis-label" x="%.1f" y="%.1f" text-anchor="middle">workload (trace)</text>`+"\n", leftM+plotW/2, plotBottom+40)
		b.WriteString("</g>\n")
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// fmtNs prints a time in ns compactly: 3.25, 42.1, 815, 12.4k, 3.1M.
func fmtNs(v float64) string {
	switch {
	case v >= 1e6:
		return trim(fmt.Sprintf("%.1f", v/1e6)) + "M"
	case v >= 1e4:
		return trim(fmt.Sprintf("%.1f", v/1e3)) + "k"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return trim(fmt.Sprintf("%.1f", v))
	}
	return trim(fmt.Sprintf("%.2f", v))
}

// fmtNsTick prints an axis tick of ns: 10, 100, 1k, 10k, 1M.
func fmtNsTick(v float64) string {
	switch {
	case v >= 1e6:
		return trim(fmt.Sprintf("%.2f", v/1e6)) + "M"
	case v >= 1e3:
		return trim(fmt.Sprintf("%.2f", v/1e3)) + "k"
	}
	return fmtTick(v)
}

// fmtBytes prints a byte count in MiB (GiB from 10 GiB on).
func fmtBytes(v float64) string {
	m := v / (1 << 20)
	switch {
	case m >= 10<<10:
		return fmt.Sprintf("%.1f GiB", m/(1<<10))
	case m >= 100:
		return fmt.Sprintf("%.0f MiB", m)
	}
	return fmt.Sprintf("%.1f MiB", m)
}

// fmtTick prints an axis tick: 0.01, 2.5, 100, 10000.
func fmtTick(v float64) string {
	if v >= 1 || v == 0 {
		return trim(fmt.Sprintf("%.1f", v))
	}
	return trim(fmt.Sprintf("%.3f", v))
}

// trim drops a trailing ".0".
func trim(s string) string {
	if strings.Contains(s, ".") {
		s = strings.TrimRight(s, "0")
		s = strings.TrimSuffix(s, ".")
	}
	return s
}
