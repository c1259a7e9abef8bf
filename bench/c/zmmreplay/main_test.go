package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReplayRequests(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run([]string{"-verbose", "../../traces/request.ztrace.gz"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	var r Result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("%v: %s", err, out.Bytes())
	}
	if r.Allocator != "zmm" || r.Trace != "request.ztrace.gz" || r.Ops == 0 || r.Requests == 0 {
		t.Errorf("result %+v", r)
	}
	if r.Mismatches != 0 {
		t.Errorf("%d mismatches", r.Mismatches)
	}
	if r.PeakRSS == 0 || r.PeakRSS < r.BaseRSS {
		t.Errorf("peak RSS %d, base %d", r.PeakRSS, r.BaseRSS)
	}
	// Under qemu-user with a reserved guest address space (CI's arm64 runs
	// with 16 and 64 KiB pages set ZMM_QEMU_RESERVED_VA) the process's
	// VmSize is the reservation, whatever the guest maps.
	if os.Getenv("ZMM_QEMU_RESERVED_VA") == "" && (r.BaseVM == 0 || r.PeakVM <= r.BaseVM) {
		t.Errorf("peak VmSize %d, base %d: the heap's chunks are not counted", r.PeakVM, r.BaseVM)
	}
	if !strings.Contains(errOut.String(), "zmm heap usage") {
		t.Errorf("-verbose printed %q", errOut.String())
	}
}

func TestBadTrace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.ztrace")
	if err := os.WriteFile(path, []byte("ZMMTRACE\x02\x00\x00\x00\x00\x00\x00\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := run([]string{path}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "unsupported version 2") {
		t.Fatalf("err = %v", err)
	}
}

func TestTable(t *testing.T) {
	rs := []Result{
		{Allocator: "glibc", Trace: "t", NsPerOp: 30, PeakRSS: 4 << 20, BaseRSS: 2 << 20},
		{Allocator: "zend", Trace: "t", NsPerOp: 10, PeakRSS: 8 << 20, BaseRSS: 6 << 20, Rep: 1},
		{Allocator: "zend", Trace: "t", NsPerOp: 20, PeakRSS: 8 << 20, BaseRSS: 6 << 20, Rep: 2},
		{Allocator: "zend", Trace: "t", NsPerOp: 90, PeakRSS: 8 << 20, BaseRSS: 6 << 20, Rep: 3},
		{Allocator: "zmm", Trace: "t", NsPerOp: 10, PeakRSS: 4 << 20, BaseRSS: 3 << 20, Mismatches: 1, Rep: 3},
		{Allocator: "zmm", Trace: "u", NsPerOp: 10, PeakRSS: 4 << 20, BaseRSS: 3 << 20, Rep: 1},
		// Paired ratios 1.2, 1.1, 0.9, 1.5, 1.0: median 1.10, quartiles 1.00 and 1.20,
		// where the ratio of the medians (9 / 10) says 0.90.
		{Allocator: "zend", Trace: "v", NsPerOp: 10, Rep: 1},
		{Allocator: "zend", Trace: "v", NsPerOp: 20, Rep: 2},
		{Allocator: "zend", Trace: "v", NsPerOp: 10, Rep: 3},
		{Allocator: "zend", Trace: "v", NsPerOp: 4, Rep: 4},
		{Allocator: "zend", Trace: "v", NsPerOp: 5, Rep: 5},
		{Allocator: "zmm", Trace: "v", NsPerOp: 12, Rep: 1},
		{Allocator: "zmm", Trace: "v", NsPerOp: 22, Rep: 2},
		{Allocator: "zmm", Trace: "v", NsPerOp: 9, Rep: 3},
		{Allocator: "zmm", Trace: "v", NsPerOp: 6, Rep: 4},
		{Allocator: "zmm", Trace: "v", NsPerOp: 5, Rep: 5},
	}
	got := Table(rs)
	want := []string{
		"| t | zmm | 10.0 | 0.50 | 0.11 | – | 4.0 MiB | 0.50 | 1.0 MiB | 0.50 | 1 | 1 |",
		"| t | zend | 20.0 | 1.00 | 1.00 | – | 8.0 MiB | 1.00 | 2.0 MiB | 1.00 | 0 | 3 |",
		"| t | glibc | 30.0 | 1.50 | – | – | 4.0 MiB | 0.50 | 2.0 MiB | 1.00 | 0 | 1 |",
		"| u | zmm | 10.0 | – | – | – | 4.0 MiB | – | 1.0 MiB | – | 0 | 1 |",
		"| v | zmm | 9.0 | 0.90 | 1.10 (1.00–1.20) | – | 0.0 MiB | – | 0.0 MiB | – | 0 | 5 |",
		"| v | zend | 10.0 | 1.00 | 1.00 (1.00–1.00) | – | 0.0 MiB | – | 0.0 MiB | – | 0 | 5 |",
	}
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if len(lines) != 2+len(want) {
		t.Fatalf("table:\n%s", got)
	}
	for i, w := range want {
		if lines[2+i] != w {
			t.Errorf("row %d:\n got %s\nwant %s", i, lines[2+i], w)
		}
	}
}

// TestTableMapped: the mapped-growth column appears when results carry
// VmSize, with "–" for runs that do not.
func TestTableMapped(t *testing.T) {
	rs := []Result{
		{Allocator: "zend", Trace: "t", NsPerOp: 10, PeakVM: 100 << 20, BaseVM: 20 << 20, Rep: 1},
		{Allocator: "zmm", Trace: "t", NsPerOp: 10, PeakVM: 80 << 20, BaseVM: 40 << 20, Rep: 1},
		{Allocator: "glibc", Trace: "t", NsPerOp: 10, Rep: 1},
	}
	lines := strings.Split(strings.TrimSpace(Table(rs)), "\n")
	want := []string{
		"| trace | allocator | ns/op | ×Zend | paired ×Zend (IQR) | allocator-only ×Zend (IQR) | peak RSS | ×Zend | RSS growth | ×Zend | mapped growth | ×Zend | mismatches | runs |",
		"|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
		"| t | zmm | 10.0 | 1.00 | 1.00 | – | 0.0 MiB | – | 0.0 MiB | – | 40.0 MiB | 0.50 | 0 | 1 |",
		"| t | zend | 10.0 | 1.00 | 1.00 | – | 0.0 MiB | – | 0.0 MiB | – | 80.0 MiB | 1.00 | 0 | 1 |",
		"| t | glibc | 10.0 | 1.00 | 1.00 | – | 0.0 MiB | – | 0.0 MiB | – | – | – | 0 | 1 |",
	}
	if len(lines) != len(want) {
		t.Fatalf("table:\n%s", strings.Join(lines, "\n"))
	}
	for i, w := range want {
		if lines[i] != w {
			t.Errorf("line %d:\n got %s\nwant %s", i, lines[i], w)
		}
	}
}
