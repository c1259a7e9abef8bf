package main

import (
	"bytes"
	"encoding/xml"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sample has 3 workloads × 3 allocators, in the C harness's naming (a
// trace's file name) and the Go benchmark's (a bare name), with extra
// fields, a comment and a blank line.
const sample = `# results
{"allocator":"zend","trace":"small.ztrace.gz","ns_per_op":30,"peak_rss_bytes":10485760,"ops":5,"rep":1}
{"allocator":"zmm","trace":"small.ztrace.gz","ns_per_op":20,"peak_rss_bytes":9437184}
{"allocator":"glibc","trace":"small.ztrace.gz","ns_per_op":25.5,"peak_rss_bytes":11534336}

{"allocator":"zend","trace":"huge.ztrace","ns_per_op":7200,"peak_rss_bytes":104857600}
{"allocator":"zmm","trace":"huge","ns_per_op":3100,"peak_rss_bytes":94371840}
{"allocator":"glibc","trace":"huge","ns_per_op":3500,"peak_rss_bytes":99614720}
{"allocator":"zend","workload":"request","ns_per_op":45,"peak_rss_bytes":20971520}
{"allocator":"zmm","workload":"request","ns_per_op":40,"peak_rss_bytes":19922944}
{"allocator":"glibc","workload":"request","ns_per_op":60,"peak_rss_bytes":23068672}
`

// svgDoc is what the tests read back from an SVG.
type svgDoc struct {
	bars  []bar
	texts []string
}

type bar struct {
	allocator, workload, metric string
	value, height               float64
}

// parseSVG decodes the whole document (failing on malformed XML) and
// collects the bars and the texts.
func parseSVG(t *testing.T, b []byte) svgDoc {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(b))
	var d svgDoc
	var inText bool
	var text strings.Builder
	depth, root := 0, ""
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		require.NoError(t, err, "the SVG is well-formed XML")
		switch el := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				root = el.Name.Local
				assert.Equal(t, "http://www.w3.org/2000/svg", el.Name.Space)
			}
			depth++
			attr := map[string]string{}
			for _, a := range el.Attr {
				attr[a.Name.Local] = a.Value
			}
			if el.Name.Local == "rect" && attr["class"] == "bar" {
				v, err := strconv.ParseFloat(attr["data-value"], 64)
				require.NoError(t, err)
				h, err := strconv.ParseFloat(attr["height"], 64)
				require.NoError(t, err)
				d.bars = append(d.bars, bar{attr["data-allocator"], attr["data-workload"], attr["data-metric"], v, h})
			}
			if el.Name.Local == "text" {
				inText = true
				text.Reset()
			}
		case xml.CharData:
			if inText {
				text.Write(el)
			}
		case xml.EndElement:
			depth--
			if el.Name.Local == "text" {
				inText = false
				d.texts = append(d.texts, text.String())
			}
		}
	}
	assert.Equal(t, "svg", root)
	assert.Zero(t, depth)
	return d
}

func chart(t *testing.T, input string, args ...string) svgDoc {
	t.Helper()
	dir := t.TempDir()
	in := filepath.Join(dir, "r.jsonl")
	require.NoError(t, os.WriteFile(in, []byte(input), 0o644))
	out := filepath.Join(dir, "c.svg")
	var stderr bytes.Buffer
	require.NoError(t, run(append([]string{"-i", in, "-o", out}, args...), io.Discard, &stderr), stderr.String())
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	return parseSVG(t, b)
}

func TestChart(t *testing.T) {
	d := chart(t, sample)
	// One bar per input row in each chart.
	require.Len(t, d.bars, 2*9)
	perMetric := map[string]int{}
	for _, b := range d.bars {
		perMetric[b.metric]++
	}
	assert.Equal(t, map[string]int{"ns_per_op": 9, "peak_rss_bytes": 9}, perMetric)
	// The trace names lose their suffixes; the first-seen order holds.
	var order []string
	for _, b := range d.bars[:9] {
		if len(order) == 0 || order[len(order)-1] != b.workload {
			order = append(order, b.workload)
		}
	}
	assert.Equal(t, []string{"small", "huge", "request"}, order)
	assert.Equal(t, []string{"zend", "zmm", "glibc"}, []string{d.bars[0].allocator, d.bars[1].allocator, d.bars[2].allocator})

	// Labels: title, legend, panel titles, axis labels, workload names and
	// the values on the bars.
	for _, want := range []string{
		"zmm and its peers: trace replay",
		"zend", "zmm", "glibc",
		"Time per trace operation (log scale)",
		"ns per operation, log scale",
		"Peak resident memory (linear scale)",
		"peak RSS (MiB), linear scale",
		"workload (trace)",
		"small", "huge", "request",
		"30", "20", "25.5", "7200", "3100", "10k", // ns values and a tick
		"10.0 MiB", "9.0 MiB", "100 MiB", // RSS values
	} {
		assert.Contains(t, d.texts, want)
	}
	// Taller bars for bigger values, in each chart.
	for _, metric := range []string{"ns_per_op", "peak_rss_bytes"} {
		var bs []bar
		for _, b := range d.bars {
			if b.metric == metric {
				bs = append(bs, b)
			}
		}
		for _, a := range bs {
			for _, b := range bs {
				if a.value < b.value {
					assert.Less(t, a.height, b.height, "%v vs %v", a, b)
				}
			}
		}
	}
}

func TestMedianAndFilter(t *testing.T) {
	in := `{"allocator":"a","trace":"t","ns_per_op":10,"peak_rss_bytes":100}
{"allocator":"a","trace":"t","ns_per_op":30,"peak_rss_bytes":300}
{"allocator":"a","trace":"t","ns_per_op":20,"peak_rss_bytes":200}
{"allocator":"b","trace":"t","ns_per_op":40}
{"allocator":"c","trace":"t","ns_per_op":50,"peak_rss_bytes":500}
`
	d := chart(t, in, "-allocators", "c,a", "-scale", "linear")
	require.Len(t, d.bars, 4, "b is filtered out")
	assert.Equal(t, bar{"c", "t", "ns_per_op", 50, d.bars[0].height}, d.bars[0], "the -allocators order")
	assert.Equal(t, 20.0, d.bars[1].value, "the median of a's three runs")
	assert.Equal(t, 200.0, d.bars[3].value)

	// Without a filter, b has a time bar but no RSS bar.
	d = chart(t, in)
	assert.Len(t, d.bars, 3+2)
}

// TestFiles: the first file with rows for an allocator and workload wins;
// -workloads filters and orders the groups.
func TestFiles(t *testing.T) {
	dir := t.TempDir()
	c := filepath.Join(dir, "c.jsonl")
	g := filepath.Join(dir, "g.jsonl")
	require.NoError(t, os.WriteFile(c, []byte(`{"allocator":"zmm","trace":"small.ztrace.gz","ns_per_op":20,"peak_rss_bytes":1}
{"allocator":"zmm","trace":"tiny.ztrace","ns_per_op":5,"peak_rss_bytes":1}
{"allocator":"zend","trace":"small.ztrace.gz","ns_per_op":30,"peak_rss_bytes":1}
`), 0o644))
	require.NoError(t, os.WriteFile(g, []byte(`{"allocator":"zmm","trace":"small.ztrace.gz","ns_per_op":25,"peak_rss_bytes":2}
{"allocator":"go","trace":"small.ztrace.gz","ns_per_op":90,"peak_rss_bytes":2}
`), 0o644))
	out := filepath.Join(dir, "o.svg")
	require.NoError(t, run([]string{"-i", c, "-i", g, "-workloads", "small", "-o", out}, io.Discard, io.Discard))
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	d := parseSVG(t, b)
	require.Len(t, d.bars, 2*3, "zmm, zend and go on small; tiny is filtered out")
	assert.Equal(t, bar{"zmm", "small", "ns_per_op", 20, d.bars[0].height}, d.bars[0], "the first file's zmm")
	assert.Equal(t, "go", d.bars[2].allocator)
}

func TestEscaping(t *testing.T) {
	d := chart(t, `{"allocator":"<x&y>","trace":"a\"b","ns_per_op":1,"peak_rss_bytes":1}`, "-title", "R&D <1>")
	require.Len(t, d.bars, 2)
	assert.Equal(t, "<x&y>", d.bars[0].allocator)
	assert.Equal(t, `a"b`, d.bars[0].workload)
	assert.Contains(t, d.texts, "R&D <1>")
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(s), 0o644))
		return p
	}
	good := write("good.jsonl", `{"allocator":"a","trace":"t","ns_per_op":1}`)
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"-o", "x.svg"}, "no input"},
		{[]string{"-i", filepath.Join(dir, "missing.jsonl")}, "no such file"},
		{[]string{"-i", write("bad.jsonl", "{\"allocator\":\"a\"\nnot json\n")}, "bad.jsonl:1"},
		{[]string{"-i", write("noalloc.jsonl", `{"trace":"t","ns_per_op":1}`)}, "noalloc.jsonl:1: no allocator"},
		{[]string{"-i", write("notrace.jsonl", `{"allocator":"a","ns_per_op":1}`)}, "no trace or workload"},
		{[]string{"-i", write("nons.jsonl", "\n"+`{"allocator":"a","trace":"t"}`)}, "nons.jsonl:2: ns_per_op"},
		{[]string{"-i", write("zero.jsonl", `{"allocator":"a","trace":"t","ns_per_op":0}`)}, "ns_per_op"},
		{[]string{"-i", write("empty.jsonl", "# nothing\n")}, "no rows"},
		{[]string{"-i", good, "-allocators", "zz"}, "no rows of the allocators"},
		{[]string{"-i", good, "-workloads", "zz"}, "no rows of the allocators"},
		{[]string{"-i", good, "-scale", "cubic"}, "-scale"},
		{[]string{"-i", good, "stray"}, "unexpected arguments"},
	} {
		err := run(c.args, io.Discard, io.Discard)
		if assert.Error(t, err, "%q", c.args) {
			assert.Contains(t, err.Error(), c.msg, "%q", c.args)
		}
	}
	var out bytes.Buffer
	require.NoError(t, run([]string{"-i", good}, &out, io.Discard), "standard output by default")
	parseSVG(t, out.Bytes())
}

func TestAxis(t *testing.T) {
	a := newAxis([]float64{3, 40, math.NaN(), 2500}, "auto")
	assert.True(t, a.log)
	assert.Equal(t, []float64{1, 10, 100, 1000, 10000}, a.ticks)
	assert.InDelta(t, 0.5, a.frac(100), 1e-9)

	a = newAxis([]float64{3, 40, 55}, "auto")
	assert.False(t, a.log)
	assert.Equal(t, 60.0, a.hi)
	assert.Equal(t, []float64{0, 20, 40, 60}, a.ticks)
	assert.InDelta(t, 0.5, a.frac(30), 1e-9)

	a = newAxis([]float64{5, 5}, "log")
	assert.True(t, a.log)
	assert.Equal(t, []float64{1, 10}, a.ticks)

	for v, want := range map[float64]string{3.25: "3.25", 42.1: "42.1", 815.4: "815", 12400: "12.4k", 3.1e6: "3.1M", 10: "10", 20000: "20k"} {
		assert.Equal(t, want, fmtNs(v))
	}
	for v, want := range map[float64]string{1 << 20: "1.0 MiB", 150 << 20: "150 MiB", 20 << 30: "20.0 GiB"} {
		assert.Equal(t, want, fmtBytes(v))
	}
	for v, want := range map[float64]string{10: "10", 1000: "1k", 2500: "2.5k", 1e5: "100k", 1e6: "1M"} {
		assert.Equal(t, want, fmtNsTick(v))
	}
	assert.Equal(t, "0.01", fmtTick(0.01))
	assert.Equal(t, "100", fmtTick(100))
}
