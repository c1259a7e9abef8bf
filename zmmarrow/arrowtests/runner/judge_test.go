package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/zmmarrow/arrowtests"
)

// goTestJSON is go test -json output of a package whose TestB/two failed;
// TestC started and never ended.
const goTestJSON = `{"Action":"start","Package":"p"}
{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestA","Output":"=== RUN   TestA\n"}
{"Action":"pass","Package":"p","Test":"TestA","Elapsed":0.01}
{"Action":"run","Package":"p","Test":"TestB"}
{"Action":"run","Package":"p","Test":"TestB/one"}
{"Action":"pass","Package":"p","Test":"TestB/one","Elapsed":0}
{"Action":"run","Package":"p","Test":"TestB/two"}
{"Action":"output","Package":"p","Test":"TestB/two","Output":"    b_test.go:9: got 0xdf\n"}
{"Action":"fail","Package":"p","Test":"TestB/two","Elapsed":0}
{"Action":"fail","Package":"p","Test":"TestB","Elapsed":0}
{"Action":"skip","Package":"p","Test":"TestS","Elapsed":0}
{"Action":"output","Package":"p","Output":"zmm debug heap: check clean, 0 bytes live\n"}
{"Action":"fail","Package":"p","Elapsed":1.5}
`

func parse(t *testing.T, s string) *result {
	t.Helper()
	r, err := parseResults(strings.NewReader(s))
	require.NoError(t, err)
	return r
}

func TestParseResults(t *testing.T) {
	r := parse(t, goTestJSON)
	pass, fail, skip := r.counts()
	assert.Equal(t, [3]int{2, 2, 1}, [3]int{pass, fail, skip})
	assert.Equal(t, []string{"TestB", "TestB/two"}, r.failed())
	assert.Equal(t, "    b_test.go:9: got 0xdf\n", outputOf(r, "TestB/two"))
	assert.True(t, r.ended)
	assert.False(t, r.passed)
	assert.InDelta(t, 1.5, r.elapsed, 1e-9)
	assert.Contains(t, r.pkgOutput.String(), "check clean")
}

func TestParseResultsRejectsGarbage(t *testing.T) {
	_, err := parseResults(strings.NewReader("{\"Action\":\"run\"}\nnot json\n"))
	assert.Error(t, err)
}

// outcome builds a result from test → action.
func outcome(passed bool, tests map[string]string) *result {
	r := &result{final: tests, output: nil, passed: passed, ended: true, report: &arrowtests.Report{}}
	return r
}

func whats(ps []problem) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.what)
	}
	return out
}

func TestJudgeSameResultsIsClean(t *testing.T) {
	tests := map[string]string{"TestA": "pass", "TestB": "fail"}
	base := outcome(false, tests)
	got := outcome(false, map[string]string{"TestA": "pass", "TestB": "fail"})
	assert.Empty(t, judge("p", "debug", base, got, nil), "TestB fails on Arrow's allocator too")
}

func TestJudgeFailureOnlyOnZmm(t *testing.T) {
	base := outcome(true, map[string]string{"TestA": "pass", "TestA/x": "pass", "TestA/y": "pass"})
	got := outcome(false, map[string]string{"TestA": "fail", "TestA/x": "fail", "TestA/y": "pass"})
	assert.Equal(t, []string{"TestA/x fails on zmm, passes on Arrow's allocator"},
		whats(judge("p", "normal", base, got, nil)), "only the innermost failure is named")
}

func TestJudgeKnownBugSkipped(t *testing.T) {
	skip, err := compileSkip("TestA/^x$")
	require.NoError(t, err)
	base := outcome(true, map[string]string{"TestA": "pass", "TestA/x": "pass", "TestA/y": "pass"})
	got := outcome(true, map[string]string{"TestA": "pass", "TestA/y": "pass"})
	assert.Empty(t, judge("p", "debug", base, got, skip))
	assert.NotEmpty(t, judge("p", "debug", base, got, nil), "without the skip, TestA/x is missing")
}

func TestJudgeDeadBinary(t *testing.T) {
	base := outcome(true, map[string]string{"TestA": "pass", "TestB": "pass", "TestB/x": "pass", "TestC": "skip"})
	got := outcome(false, map[string]string{"TestA": "pass"})
	got.report, got.reportErr = nil, "no report"
	got.output = map[string]*strings.Builder{"TestB": new(strings.Builder)}
	got.output["TestB"].WriteString("unexpected fault address 0x7f0000001000\nfatal error: fault\n")
	ps := judge("p", "guard", base, got, nil)
	require.Len(t, ps, 2)
	assert.Equal(t, "the test binary did not finish: no report", ps[0].what)
	assert.Contains(t, ps[0].detail, "fatal error: fault", "the crash of the test that never ended")
	assert.Equal(t, "1 tests passed on Arrow's allocator and did not finish on zmm: TestB", ps[1].what,
		"TestB/x is inside TestB; TestC was skipped")
}

func TestJudgeCorruptHeap(t *testing.T) {
	base := outcome(true, map[string]string{"TestA": "pass"})
	got := outcome(false, map[string]string{"TestA": "pass"})
	got.report.Check = "zmm: heap check found 1 problem(s)"
	ps := judge("p", "debug", base, got, nil)
	require.Len(t, ps, 1)
	assert.Equal(t, "the heap's Check failed after the tests", ps[0].what)
	assert.Equal(t, got.report.Check, ps[0].detail)
}

func TestJudgeFailedPackageWithoutFailedTest(t *testing.T) {
	base := outcome(true, map[string]string{"TestA": "pass"})
	got := outcome(false, map[string]string{"TestA": "pass"})
	assert.Equal(t, []string{"go test failed without a failing test"}, whats(judge("p", "normal", base, got, nil)))
}

func TestInnermostAndOutermost(t *testing.T) {
	names := []string{"A", "A-x", "A/b", "A/b/c", "B"}
	assert.Equal(t, []string{"A-x", "A/b/c", "B"}, innermost(names))
	assert.Equal(t, []string{"A", "A-x", "B"}, outermost(names))
}
