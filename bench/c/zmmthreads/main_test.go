package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestWorkloads(t *testing.T) {
	for _, c := range []struct {
		workload string
		threads  int
		ops      uint64 // after rounding
	}{
		{"churn", 1, 30001},
		{"churn", 3, 30001},
		{"xmalloc", 1, 30208}, // 118 batches of 256
		{"xmalloc", 5, 30208}, // two pairs
		{"larson", 1, 30001},
		{"larson", 3, 30003},
		{"cache-scratch", 1, 30001},
		{"cache-scratch", 3, 30001},
		{"mstress", 1, 31000}, // 31 rounds of one goroutine's 1000 steps
		{"mstress", 3, 33000}, // 11 rounds of three
	} {
		var out bytes.Buffer
		if err := run([]string{c.workload, strconv.Itoa(c.threads), "30001"}, &out); err != nil {
			t.Fatalf("%s on %d: %v", c.workload, c.threads, err)
		}
		var r Result
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			t.Fatalf("%v: %s", err, out.Bytes())
		}
		if r.Allocator != "zmm" || r.Workload != c.workload || r.Threads != c.threads || r.Ops != c.ops ||
			r.DurationNs <= 0 || r.NsPerOp <= 0 {
			t.Errorf("%s on %d: %+v", c.workload, c.threads, r)
		}
	}
}

// The sizes are churnSizes' (bench/shared_test.go), which threads.c
// reproduces: its first ones, and their bounds.
func TestSizes(t *testing.T) {
	if sizes[0] != 2245 || sizes[1] != 946 || sizes[2] != 2704 {
		t.Errorf("sizes start %v", sizes[:3])
	}
	for _, s := range sizes {
		if s < 16 || s > 3072 {
			t.Fatalf("size %d", s)
		}
	}
}

func TestBadArgs(t *testing.T) {
	for _, args := range [][]string{
		{}, {"churn", "1"}, {"spin", "1", "10"}, {"churn", "0", "10"}, {"churn", "1", "0"}, {"churn", "x", "10"}, {"-table"},
	} {
		if err := run(args, &bytes.Buffer{}); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}

func TestTable(t *testing.T) {
	lines := []string{
		`{"rep":1,"allocator":"zmm","workload":"churn","threads":1,"ops":10,"ns_per_op":20,"duration_ns":200}`,
		`{"rep":2,"allocator":"zmm","workload":"churn","threads":1,"ops":10,"ns_per_op":30,"duration_ns":300}`,
		`{"rep":3,"allocator":"zmm","workload":"churn","threads":1,"ops":10,"ns_per_op":100,"duration_ns":1000}`,
		`{"rep":1,"allocator":"zmm","workload":"churn","threads":2,"ops":10,"ns_per_op":15,"duration_ns":150}`,
		`{"rep":1,"allocator":"glibc","workload":"larson","threads":2,"ops":10,"ns_per_op":40,"duration_ns":400}`,
		`{"rep":1,"allocator":"glibc","workload":"churn","threads":1,"ops":10,"ns_per_op":50,"duration_ns":500}`,
	}
	path := filepath.Join(t.TempDir(), "r.jsonl")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run([]string{"-table", path}, &out); err != nil {
		t.Fatal(err)
	}
	want := "| workload | threads | glibc | zmm |\n" +
		"|---|---:|---:|---:|\n" +
		"| churn | 1 | 50.0 (1.00×) | 30.0 (1.00×) |\n" +
		"| churn | 2 | – | 15.0 (2.00×) |\n" +
		"| larson | 2 | 40.0 | – |\n"
	if out.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", out.String(), want)
	}
}
