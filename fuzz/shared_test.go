package fuzz

// FuzzShared: programs for a Shared allocator run by several goroutines at
// once. The input's first byte picks the number of goroutines (2-5) and
// GOMAXPROCS (1-4); the rest is dealt to the goroutines in turn, two bytes
// per operation: allocate (a small, large or huge size), free one of its
// blocks, reallocate one, hand one to the exchange, take one from the
// exchange and free it (most likely a remote free), free an interior
// pointer (an error, and nothing changes), GC, Check. With the first byte's
// top bit set the allocator has a 48 MiB limit: an allocation or a realloc
// it refuses must fail with ErrMemoryLimit and change nothing, and the
// allocator's RealPeakUsage must never pass the limit. With its bit 6 set
// the allocator is in debug mode (serial: one debug heap that every
// goroutine takes in turn), and must end with no leaks.
//
// Every block holds a pattern of its id in its first bytes, checked when
// it is freed, reallocated or taken; a set of live addresses catches a
// block handed out twice. In the end every block is freed, Check must be
// clean and the usage zero. The goroutines interleave differently on every
// run, so a failure may not repeat: its log names the operations.

import (
	"errors"
	"runtime"
	"sync"
	"testing"
	"unsafe"

	"github.com/gozmm/zmm/zmm"
)

func FuzzShared(f *testing.F) {
	f.Add([]byte{0x13, 0, 1, 0, 2, 0, 3, 3, 0, 4, 1, 5, 0, 4, 2, 0, 9, 3, 1, 6, 0, 7, 0})
	f.Add([]byte{0x21, 0, 200, 0, 100, 3, 0, 3, 1, 4, 0, 4, 0, 2, 0, 2, 1, 0, 255, 8, 0})
	f.Add([]byte{0xa3, 0, 255, 0, 254, 0, 253, 0, 252, 4, 250, 3, 0, 4, 251, 0, 255})
	seq := []byte{0x32}
	for i := range 120 {
		seq = append(seq, byte(i%7), byte(i*37))
	}
	f.Add(seq)
	f.Add(append([]byte{0x62}, seq[1:]...)) // the same in debug mode
	f.Add([]byte{0xd3, 0, 255, 0, 254, 0, 253, 0, 252, 4, 250, 3, 0, 4, 251, 0, 255, 5, 9})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 3 {
			return
		}
		sharedExec(t, data)
	})
}

type sharedFuzzBlock struct {
	p    unsafe.Pointer
	size uintptr
	id   uint64
}

// sharedPattern is the first bytes of a block that the test checks.
func sharedPatternLen(size uintptr) uintptr { return min(size, 64) }

func (b sharedFuzzBlock) stamp() {
	s := zmm.Bytes(b.p, int(sharedPatternLen(b.size)))
	for i := range s {
		s[i] = byte(b.id*131 + uint64(i))
	}
}

func (b sharedFuzzBlock) intact(n uintptr) bool {
	s := zmm.Bytes(b.p, int(min(n, sharedPatternLen(b.size))))
	for i := range s {
		if s[i] != byte(b.id*131+uint64(i)) {
			return false
		}
	}
	return true
}

// sharedFuzzSize maps a byte to a request: mostly small, some large, a few
// huge.
func sharedFuzzSize(x byte) uintptr {
	switch {
	case x < 200:
		return uintptr(x)*15 + 1 // 1..2986
	case x < 250:
		return uintptr(x-200)*20_000 + 3073 // large
	default:
		return zmm.MaxLargeSize + 1 + uintptr(x-250)<<20 // huge
	}
}

func sharedExec(t *testing.T, data []byte) {
	limit := zmm.Unlimited
	if data[0]&0x80 != 0 {
		limit = 48 << 20
	}
	debug := data[0]&0x40 != 0
	a, err := zmm.NewShared(zmm.WithDebug(debug), zmm.WithAllocMode(zmm.ModeChunks), zmm.WithLimit(limit), zmm.WithLeakReport(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1 + int(data[0]>>4&3)))
	workers := 2 + int(data[0]&0xf)%4
	progs := make([][]byte, workers)
	for i := 1; i+1 < len(data); i += 2 {
		w := (i / 2) % workers
		progs[w] = append(progs[w], data[i], data[i+1])
	}

	var (
		mu       sync.Mutex
		live     = map[uintptr]uint64{}
		exchange []sharedFuzzBlock
		nextID   uint64
		wg       sync.WaitGroup
	)
	fail := func(format string, args ...any) {
		t.Errorf(format, args...)
	}
	born := func(p unsafe.Pointer, size uintptr) sharedFuzzBlock {
		mu.Lock()
		defer mu.Unlock()
		nextID++
		if id, ok := live[uintptr(p)]; ok {
			fail("0x%x handed out while live (block %d)", p, id)
		}
		live[uintptr(p)] = nextID
		b := sharedFuzzBlock{p: p, size: size, id: nextID}
		b.stamp()
		return b
	}
	dies := func(b sharedFuzzBlock, what string) {
		if !b.intact(b.size) {
			fail("%s: block %d at 0x%x (%d bytes) lost its pattern", what, b.id, b.p, b.size)
		}
		mu.Lock()
		delete(live, uintptr(b.p))
		mu.Unlock()
	}
	for w, prog := range progs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []sharedFuzzBlock
			pick := func(x byte) int { return int(x) % len(mine) }
			for i := 0; i+1 < len(prog); i += 2 {
				op, x := prog[i]%10, prog[i+1]
				switch {
				case op <= 2 || len(mine) == 0 && op <= 6:
					size := sharedFuzzSize(x)
					var p unsafe.Pointer
					if err := zmm.Try(func() { p = a.Alloc(size) }); err != nil {
						if !errors.Is(err, zmm.ErrMemoryLimit) || limit == zmm.Unlimited {
							fail("Alloc(%d): %v", size, err)
						}
						continue
					}
					mine = append(mine, born(p, size))
				case op == 3:
					j := pick(x)
					dies(mine[j], "Free")
					a.Free(mine[j].p)
					mine = append(mine[:j], mine[j+1:]...)
				case op == 4:
					j := pick(x)
					b := mine[j]
					size := sharedFuzzSize(x ^ 0x5a)
					dies(b, "Realloc")
					var q unsafe.Pointer
					if err := zmm.Try(func() { q = a.Realloc(b.p, size) }); err != nil {
						if !errors.Is(err, zmm.ErrMemoryLimit) || limit == zmm.Unlimited {
							fail("Realloc(%d): %v", size, err)
						}
						if !b.intact(b.size) {
							fail("a refused Realloc changed block %d", b.id)
						}
						mu.Lock()
						live[uintptr(b.p)] = b.id // still ours: nothing was freed
						mu.Unlock()
						continue
					}
					if kept := (sharedFuzzBlock{p: q, size: b.size, id: b.id}); !kept.intact(size) {
						fail("Realloc of block %d (%d -> %d bytes) lost its bytes", b.id, b.size, size)
					}
					mine[j] = born(q, size)
				case op == 5:
					j := pick(x)
					mu.Lock()
					exchange = append(exchange, mine[j])
					mu.Unlock()
					mine = append(mine[:j], mine[j+1:]...)
				case op == 6:
					mu.Lock()
					var b sharedFuzzBlock
					ok := len(exchange) > 0
					if ok {
						k := int(x) % len(exchange)
						b = exchange[k]
						exchange = append(exchange[:k], exchange[k+1:]...)
					}
					mu.Unlock()
					if ok {
						dies(b, "Free of a block taken from the exchange")
						a.Free(b.p)
					}
				case op == 7 && len(mine) > 0:
					b := mine[pick(x)]
					if b.size > 16 {
						err := zmm.Try(func() { a.Free(unsafe.Add(b.p, 8)) })
						if !errors.Is(err, zmm.ErrInvalidPointer) {
							fail("Free of an interior pointer of block %d: %v", b.id, err)
						}
						if !b.intact(b.size) {
							fail("a refused Free changed block %d", b.id)
						}
					}
				case op == 8 && w == 0:
					a.GC()
				case op == 9 && w == 0:
					if err := a.Check(); err != nil {
						fail("Check: %v", err)
					}
				}
			}
			for _, b := range mine {
				dies(b, "Free at the end")
				a.Free(b.p)
			}
		}()
	}
	wg.Wait()
	for _, b := range exchange {
		dies(b, "Free of the exchange at the end")
		a.Free(b.p)
	}
	if err := a.Check(); err != nil {
		t.Fatalf("Check at the end: %v", err)
	}
	if len(live) != 0 {
		t.Fatalf("%d blocks still live", len(live))
	}
	if u := a.Usage(); u != 0 {
		t.Fatalf("Usage %d after every block was freed and collected", u)
	}
	if l := a.Leaks(); len(l) != 0 {
		t.Fatalf("%d leaks after every block was freed, the first %+v", len(l), l[0])
	}
	if p := a.RealPeakUsage(); p > limit {
		t.Fatalf("RealPeakUsage %d passed the limit %d", p, limit)
	}
}
