package zmm

import (
	"fmt"
	"io"
	"math"
	"os"
	"strconv"

	"github.com/gozmm/zmm/storage"
)

// Unlimited is the memory limit of a heap that has none.
const Unlimited uintptr = math.MaxUint64 >> 1

// Option configures a heap made by New.
type Option func(*config)

// config is what New makes a heap from: the options, then the environment
// for what they leave open.
type config struct {
	limit    uintptr
	debug    *bool
	mode     *AllocMode
	leaks    io.Writer
	leaksSet bool
	name     string
	storage  storage.Storage
	// guardAlign is the alignment of guard-mode blocks; 0 places each
	// block's end against its guard page (see WithGuardAlignment).
	guardAlign    uintptr
	guardAlignSet bool
}

// AllocMode says where a heap's blocks come from.
type AllocMode uint8

const (
	// ModeChunks serves blocks from chunks: the normal mode.
	ModeChunks AllocMode = iota
	// ModeSystem makes every block its own Go allocation (the analog of
	// USE_ZEND_ALLOC=0), so that the race detector and -asan builds see
	// each block on its own. Blocks stay alive until freed or Reset.
	ModeSystem
	// ModeGuard makes every block its own mapping that ends against an
	// inaccessible page: a write past the end faults on the spot, with
	// the Go stack trace.
	ModeGuard
)

func (m AllocMode) String() string {
	switch m {
	case ModeChunks:
		return "chunks"
	case ModeSystem:
		return "system"
	case ModeGuard:
		return "guard"
	}
	return fmt.Sprintf("AllocMode(%d)", uint8(m))
}

// WithDebug turns debug mode on or off for this heap, whatever ZMM_DEBUG
// says: each block then carries its allocation site and guard canaries,
// misuse is reported with the site, and leaks are reported at Reset and
// Close in the Zend MM's format.
func WithDebug(on bool) Option { return func(c *config) { c.debug = &on } }

// WithAllocMode chooses where blocks come from, whatever ZMM_ALLOC says.
func WithAllocMode(m AllocMode) Option { return func(c *config) { c.mode = &m } }

// WithGuardAlignment sets how guard-mode blocks are placed, whatever
// ZMM_GUARD_ALIGN says; other modes ignore it.
//
// By default (align 0) a guard-mode block ends exactly where its guard
// page begins, so a write one byte past its end faults on the spot, as
// Electric Fence does with EF_ALIGNMENT=1. The block is then aligned to the
// largest power of two, up to 16, that divides its size: a Go value or
// slice of a type whose size is n is always aligned for that type, since
// Go types' sizes are multiples of their alignment; a 100-byte buffer is
// 4-byte aligned. With align a power of two from 1 to 4096, every block is
// aligned to align and up to align-1 bytes may lie between its end and the
// guard page: they hold a canary that Free, Realloc and Check verify, so a
// write there is reported at the next of those calls, not on the spot.
// Use 8 where code needs the 8-byte alignment of the other modes for every
// size. New refuses any other value (ErrConfig).
func WithGuardAlignment(align uintptr) Option {
	return func(c *config) { c.guardAlign, c.guardAlignSet = align, true }
}

// WithLeakReport sets where a debug heap writes its leak report (stderr by
// default); nil silences it (ZEND_ALLOC_PRINT_LEAKS=0). Leaks stays
// available. The report is written by the goroutine that calls Reset or
// Close: a writer shared by heaps of several goroutines must be safe for
// concurrent use (os.Stderr is).
func WithLeakReport(w io.Writer) Option {
	return func(c *config) { c.leaks, c.leaksSet = w, true }
}

// WithName names the heap: in its leak report (the report's script=),
// in Snapshot and in the tools that show it. The default is "-".
func WithName(name string) Option { return func(c *config) { c.name = name } }

// WithLimit sets the heap's memory limit in bytes (memory_limit). The
// limit is checked, as in the Zend MM, against the memory mapped from the
// OS, when a chunk or a huge block is mapped; it cannot be below one chunk.
func WithLimit(bytes uintptr) Option { return func(c *config) { c.limit = bytes } }

// WithStorage makes the heap take its chunks and huge blocks from st
// instead of anonymous mappings from the OS: a fixed region
// (storage.NewRegion), shared memory (storage.NewMemfd) or a Storage of
// your own. A heap over a region never grows past it: when the region is
// full, allocations fail with ErrOutOfMemory, whose message names it. A
// huge block grows in place if st can extend it (storage.Extender) and is
// copied otherwise. st must stay usable until the heap is closed.
//
// nil and storage.OS are the default. A storage cannot serve system or
// guard mode (ZMM_ALLOC=system|guard), which map every block on its own:
// New returns an error for that combination.
func WithStorage(st storage.Storage) Option { return func(c *config) { c.storage = st } }

// isOS reports whether st is the default storage.
func isOS(st storage.Storage) bool {
	switch st.(type) {
	case nil, storage.OSStorage, *storage.OSStorage:
		return true
	}
	return false
}

// resolve fills in what the options left open from ZMM_DEBUG, ZMM_ALLOC
// and ZMM_GUARD_ALIGN, and checks that the whole makes a heap. A value it
// does not accept is an error naming the variable or option (New reports
// it as ErrConfig), never silently the default.
func (c *config) resolve() error {
	if c.debug == nil {
		on := false
		if v, set := os.LookupEnv("ZMM_DEBUG"); set && v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("ZMM_DEBUG=%q: want 1, t, true, TRUE, True or 0, f, false, FALSE, False (strconv.ParseBool)", v)
			}
			on = b
		}
		c.debug = &on
	}
	if c.mode == nil {
		m := ModeChunks
		switch v := os.Getenv("ZMM_ALLOC"); v {
		case "", "chunks":
		case "system":
			m = ModeSystem
		case "guard":
			m = ModeGuard
		default:
			return fmt.Errorf("ZMM_ALLOC=%q: want system, guard or chunks", v)
		}
		c.mode = &m
	}
	if !c.guardAlignSet {
		if v := os.Getenv("ZMM_GUARD_ALIGN"); v != "" {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil || !validGuardAlign(uintptr(n)) {
				return fmt.Errorf("ZMM_GUARD_ALIGN=%q: want 0 (each block against its guard page) or a power of two from 1 to 4096", v)
			}
			c.guardAlign = uintptr(n)
		}
	} else if !validGuardAlign(c.guardAlign) {
		return fmt.Errorf("WithGuardAlignment(%d): want 0 (each block against its guard page) or a power of two from 1 to 4096", c.guardAlign)
	}
	if !c.leaksSet {
		c.leaks = os.Stderr
	}
	if c.name == "" {
		c.name = "-"
	}
	if isOS(c.storage) {
		c.storage = nil
	} else if *c.mode != ModeChunks {
		return fmt.Errorf("WithStorage(%v) needs chunks mode, not %v mode (ZMM_ALLOC or WithAllocMode), which maps every block on its own", c.storage, *c.mode)
	}
	return nil
}

func validGuardAlign(a uintptr) bool { return a == 0 || a <= 4096 && a&(a-1) == 0 }
