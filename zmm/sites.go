package zmm

import (
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
)

// Allocation sites. A heap that keeps sites (debug, system and guard
// modes) records a program counter per block: the first caller outside
// package zmm and the packages marked with MarkHelperPackage. Finding it is
// most of debug mode's cost, so the stack walk is kept short and the
// verdict on each program counter cached; the counter becomes file:line
// only when a report is written (resolveSite).

// siteCache remembers which program counters belong to zmm itself, so that
// finding the caller outside zmm costs a few compares once warm.
type siteCache struct {
	pc       [256]uintptr
	internal [256]bool
}

const zmmFuncPrefix = "github.com/gozmm/zmm/zmm."

// helperPrefixes are the function-name prefixes of the packages marked
// with MarkHelperPackage.
var helperPrefixes atomic.Pointer[[]string]

func isInternalFunc(name string) bool {
	if strings.HasPrefix(name, zmmFuncPrefix) {
		return true
	}
	if l := helperPrefixes.Load(); l != nil {
		for _, p := range *l {
			if strings.HasPrefix(name, p) {
				return true
			}
		}
	}
	return false
}

// MarkHelperPackage makes debug heaps look past the functions of the
// package with the given import path when they record a block's allocation
// site, as testing.T.Helper does for test helpers: a package that wraps
// zmm (an adapter, a lifecycle driver, an arena type) then has its
// callers' lines in leak reports, errors and profiles instead of its own.
// Call it from the package's init function: a debug heap caches what it
// learnt of a program counter, so marking later may not reach heaps that
// have already recorded sites from the package.
func MarkHelperPackage(importPath string) {
	for {
		old := helperPrefixes.Load()
		var next []string
		if old != nil {
			next = append(next, *old...)
		}
		next = append(next, importPath+".")
		if helperPrefixes.CompareAndSwap(old, &next) {
			return
		}
	}
}

// callerSite returns the program counter of the first caller outside
// package zmm (and the helper packages). Walking the stack costs in
// proportion to its depth, so it first looks at the few frames above it
// (zmm's entry points are at most a handful of calls deep) and walks
// further only when all of those are zmm's own.
func (c *siteCache) callerSite() uintptr {
	var pcs [32]uintptr
	n := runtime.Callers(2, pcs[:8]) // skip runtime.Callers and callerSite
	if pc := c.firstOutside(pcs[:n]); pc != 0 || n < 8 {
		return pc
	}
	n = runtime.Callers(2, pcs[:])
	if pc := c.firstOutside(pcs[:n]); pc != 0 {
		return pc
	}
	if n > 0 {
		return pcs[n-1]
	}
	return 0
}

// firstOutside returns the first program counter not in package zmm, or 0.
func (c *siteCache) firstOutside(pcs []uintptr) uintptr {
	for _, pc := range pcs {
		i := pc >> 2 & 255
		if c.pc[i] != pc {
			f := runtime.FuncForPC(pc - 1)
			c.pc[i], c.internal[i] = pc, f != nil && isInternalFunc(f.Name())
		}
		if !c.internal[i] {
			return pc
		}
	}
	return 0
}

// Site is a place in the program: an allocation site.
type Site struct {
	PC       uintptr
	Function string
	File     string
	Line     int
}

func (s Site) String() string {
	if s.File == "" {
		return "unknown site"
	}
	return fmt.Sprintf("%s:%d", s.File, s.Line)
}

// resolveSite turns a program counter into file:line.
func resolveSite(pc uintptr) Site {
	if pc == 0 {
		return Site{}
	}
	frames := runtime.CallersFrames([]uintptr{pc})
	for {
		f, more := frames.Next()
		if !isInternalFunc(f.Function) || !more {
			return Site{PC: pc, Function: f.Function, File: f.File, Line: f.Line}
		}
	}
}
