package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/gozmm/zmm/zmmarrow/arrowtests"
)

// testEvent is a line of go test -json (cmd/test2json's TestEvent, plus the
// build events).
type testEvent struct {
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

// result is one package's run in one mode.
type result struct {
	// final is each test's last action: pass, fail or skip (subtests
	// included, named with their parents: "TestA/sub").
	final map[string]string
	// output is each test's output, kept for the ones that fail.
	output map[string]*strings.Builder
	// pkgOutput is the output outside any test: build errors, a crash,
	// the harness's summary line.
	pkgOutput strings.Builder
	passed    bool    // the package's own action was pass
	ended     bool    // the package's pass or fail was seen
	elapsed   float64 // seconds, as go test reports the package
	report    *arrowtests.Report
	// reportErr says why there is no report.
	reportErr string
}

// parseResults reads go test -json output.
func parseResults(r io.Reader) (*result, error) {
	res := &result{final: map[string]string{}, output: map[string]*strings.Builder{}}
	dec := json.NewDecoder(r)
	for {
		var e testEvent
		if err := dec.Decode(&e); err == io.EOF {
			return res, nil
		} else if err != nil {
			return res, fmt.Errorf("reading go test -json: %w", err)
		}
		switch {
		case e.Action == "build-output":
			res.pkgOutput.WriteString(e.Output)
		case e.Action == "output" && e.Test != "":
			b := res.output[e.Test]
			if b == nil {
				b = new(strings.Builder)
				res.output[e.Test] = b
			}
			b.WriteString(e.Output)
		case e.Action == "output":
			res.pkgOutput.WriteString(e.Output)
		case e.Test != "" && (e.Action == "pass" || e.Action == "fail" || e.Action == "skip"):
			res.final[e.Test] = e.Action
		case e.Test == "" && (e.Action == "pass" || e.Action == "fail" || e.Action == "skip"):
			res.ended = true
			res.passed = e.Action != "fail"
			res.elapsed = e.Elapsed
		}
	}
}

// counts returns how many tests passed, failed and were skipped.
func (r *result) counts() (pass, fail, skip int) {
	for _, a := range r.final {
		switch a {
		case "pass":
			pass++
		case "fail":
			fail++
		case "skip":
			skip++
		}
	}
	return
}

// failed returns the names of the tests that failed, sorted.
func (r *result) failed() []string {
	var out []string
	for t, a := range r.final {
		if a == "fail" {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return out
}
