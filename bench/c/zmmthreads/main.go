// Command zmmthreads is the zmm side of bench/c/threads.c: the same five
// concurrency workloads (churn, xmalloc, larson, cache-scratch, mstress;
// threads.c describes them), with the same block sizes and random streams,
// on one zmm.Shared. Each of the C program's threads is a goroutine here,
// and GOMAXPROCS is set to the number of goroutines, so that both sides run
// as many threads at once: for xmalloc at THREADS=1 that is one producer and
// one consumer on two Ps (the consumer's frees are remote), where
// BenchmarkSharedProducerConsumer at -cpu 1 runs both on one P (all its
// frees are local). For mstress GOMAXPROCS is THREADS, and each round's
// goroutines are fresh ones, as the C threads are; but zmm's heaps belong
// to the Ps, not to the goroutines, so a goroutine that ends leaves no heap
// behind, where a C thread that ends leaves its allocator a thread cache or
// heap to flush, abandon or reuse. It prints one JSON object with the fields
// of the C program (allocator "zmm").
//
//	zmmthreads WORKLOAD THREADS OPS
//	zmmthreads -table RESULTS.jsonl...
//
// With -table it reads the JSON lines that threads.sh writes (this command's
// and the C binaries') and prints a Markdown table of median ns/op per
// workload, thread count and allocator, with the speedup over one thread.
package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gozmm/zmm/zmm"
)

// The constants of threads.c.
const (
	nSizes        = 1024 // churnSizes' length
	ringLen       = 64   // churn: live blocks per goroutine
	batchLen      = 256  // xmalloc: blocks per batch
	queueLen      = 4    // xmalloc: batches in flight per pair
	larsonSlots   = 1000 // larson: blocks per array
	larsonRound   = 10000
	scratchSize   = 8    // cache-scratch: block size
	scratchWrites = 32   // cache-scratch: increments of each byte per op
	mstressBatch  = 1000 // mstress: steps (blocks allocated) of a goroutine
	transfers     = 1000 // mstress: slots of the transfer array
	maxThreads    = 1024
	seed          = 0x5a6d6d // bench's seed ("zmm")
	sizesStream   = 18       // churnSizes' stream
	larsonStream  = 1000     // + the goroutine's index
	mstressStream = 2000     // + round * THREADS + the goroutine's index
)

// Result is one run, as threads.c prints it; Rep is added by threads.sh.
type Result struct {
	Rep        int     `json:"rep,omitempty"`
	Allocator  string  `json:"allocator"`
	Workload   string  `json:"workload"`
	Threads    int     `json:"threads"`
	Ops        uint64  `json:"ops"`
	NsPerOp    float64 `json:"ns_per_op"`
	DurationNs int64   `json:"duration_ns"`
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "zmmthreads:", err)
		os.Exit(1)
	}
}

const usage = "usage: zmmthreads WORKLOAD THREADS OPS | zmmthreads -table RESULTS.jsonl..."

func run(args []string, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "-table" {
		if len(args) == 1 {
			return errors.New("-table needs result files")
		}
		var all []Result
		for _, path := range args[1:] {
			rs, err := readResults(path)
			if err != nil {
				return err
			}
			all = append(all, rs...)
		}
		_, err := io.WriteString(stdout, Table(all))
		return err
	}
	if len(args) != 3 {
		return errors.New(usage)
	}
	threads, err := strconv.Atoi(args[1])
	if err != nil || threads < 1 || threads > maxThreads {
		return fmt.Errorf("THREADS must be 1..%d, not %q", maxThreads, args[1])
	}
	ops, err := strconv.ParseUint(args[2], 10, 64)
	if err != nil || ops == 0 || ops > 1<<40 {
		return fmt.Errorf("OPS must be a positive count, not %q", args[2])
	}
	res, err := Run(args[0], threads, ops)
	if err != nil {
		return err
	}
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s\n", b)
	return err
}

// Run runs one workload on a new zmm.Shared and checks the allocator
// afterwards (untimed).
func Run(workload string, threads int, ops uint64) (Result, error) {
	var w func(a *zmm.Shared, threads int, ops uint64) plan
	switch workload {
	case "churn":
		w = churn
	case "xmalloc":
		w = xmalloc
	case "larson":
		w = larson
	case "cache-scratch":
		w = cacheScratch
	case "mstress":
		w = mstress
	default:
		return Result{}, fmt.Errorf("unknown workload %q (churn, xmalloc, larson, cache-scratch or mstress)", workload)
	}
	a, err := zmm.NewShared(zmm.WithDebug(false), zmm.WithAllocMode(zmm.ModeChunks))
	if err != nil {
		return Result{}, err
	}
	defer a.Close()
	p := w(a, threads, ops)
	runtime.GOMAXPROCS(cmp.Or(p.procs, p.goroutines))
	d := race(p.goroutines, p.setup, p.body)
	if p.cleanup != nil {
		p.cleanup()
	}
	if err := a.Check(); err != nil {
		return Result{}, fmt.Errorf("after the run: %w", err)
	}
	return Result{
		Allocator:  "zmm",
		Workload:   workload,
		Threads:    threads,
		Ops:        p.ops,
		NsPerOp:    math.Round(float64(d.Nanoseconds())/float64(p.ops)*1000) / 1000,
		DurationNs: d.Nanoseconds(),
	}, nil
}

// race runs setup(i) and then body(i) on goroutines 0..n-1 and times the
// bodies: from the moment every goroutine has done its setup to the end of
// the last body.
func race(n int, setup, body func(i int)) time.Duration {
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	ready.Add(n)
	done.Add(n)
	for i := range n {
		go func() {
			defer done.Done()
			if setup != nil {
				setup(i)
			}
			ready.Done()
			<-start
			body(i)
		}()
	}
	ready.Wait()
	t0 := time.Now()
	close(start)
	done.Wait()
	return time.Since(t0)
}

// sizes is bench's churnSizes(): 1024 sizes uniform in 16..3072.
var sizes = func() []uintptr {
	r := rand.New(rand.NewPCG(seed, sizesStream))
	s := make([]uintptr, nSizes)
	for i := range s {
		s[i] = uintptr(16 + r.IntN(3072-16+1))
	}
	return s
}()

// allocBlock allocates n bytes (n >= 8) and writes stamp into them.
func allocBlock(a *zmm.Shared, n uintptr, stamp uint64) unsafe.Pointer {
	p := a.Alloc(n)
	*(*uint64)(p) = stamp
	return p
}

// share is worker i's part of total split over n workers.
func share(total uint64, n, i int) uint64 {
	s := total / uint64(n)
	if uint64(i) < total%uint64(n) {
		s++
	}
	return s
}

// A plan is a workload ready to run on its goroutines 0..goroutines-1.
type plan struct {
	ops        uint64 // OPS, rounded as threads.c rounds it
	goroutines int
	setup      func(i int) // before the clock starts; may be nil
	body       func(i int) // timed
	procs      int         // GOMAXPROCS if not goroutines (0)
	cleanup    func()      // after the clock; may be nil
}

func churn(a *zmm.Shared, threads int, ops uint64) plan {
	return plan{ops: ops, goroutines: threads, body: func(i int) {
		var ring [ringLen]unsafe.Pointer
		for j := range share(ops, threads, i) {
			slot := &ring[j&(ringLen-1)]
			if *slot != nil {
				a.Free(*slot)
			}
			*slot = allocBlock(a, sizes[j&(nSizes-1)], j)
		}
		for _, p := range ring {
			if p != nil {
				a.Free(p)
			}
		}
	}}
}

// xmalloc: goroutine 2p is pair p's producer, 2p+1 its consumer. A pair
// owns queueLen batches, which go round through two channels: empty ones
// to the producer, full ones to the consumer (threads.c's queue of 4).
func xmalloc(a *zmm.Shared, threads int, ops uint64) plan {
	npairs := max(threads/2, 1)
	batches := (ops + batchLen - 1) / batchLen
	type batch = *[batchLen]unsafe.Pointer
	type pair struct{ empty, full chan batch }
	pairs := make([]pair, npairs)
	for p := range pairs {
		pairs[p] = pair{make(chan batch, queueLen), make(chan batch, queueLen)}
		for range queueLen {
			pairs[p].empty <- new([batchLen]unsafe.Pointer)
		}
	}
	return plan{ops: batches * batchLen, goroutines: 2 * npairs, body: func(g int) {
		p := g / 2
		q := pairs[p]
		n := share(batches, npairs, p)
		if g%2 == 1 {
			for range n {
				bp := <-q.full
				for _, b := range bp {
					a.Free(b)
				}
				q.empty <- bp
			}
			return
		}
		i := uint64(p) * 97 // as the Go benchmark's producers
		for range n {
			bp := <-q.empty
			for j := range bp {
				bp[j] = allocBlock(a, sizes[i&(nSizes-1)], i)
				i++
			}
			q.full <- bp
		}
	}}
}

func larson(a *zmm.Shared, threads int, ops uint64) plan {
	steps := (ops + uint64(threads) - 1) / uint64(threads)
	arrays := make([][larsonSlots]unsafe.Pointer, threads)
	rngs := make([]*rand.PCG, threads)
	exchange := newBarrier(threads)
	// next draws a slot and a size from one random number, as threads.c.
	next := func(r *rand.PCG) (int, uintptr) {
		x := r.Uint64()
		return int(((x >> 32) * larsonSlots) >> 32), sizes[x&(nSizes-1)]
	}
	setup := func(t int) {
		rngs[t] = rand.NewPCG(seed, larsonStream+uint64(t))
		for i := range arrays[t] {
			_, n := next(rngs[t])
			arrays[t][i] = allocBlock(a, n, uint64(i))
		}
	}
	body := func(t int) {
		r := rngs[t]
		var step uint64
		for round := 0; step < steps; round++ {
			// In round r, goroutine t works on the array t+r filled.
			arr := &arrays[(t+round)%threads]
			for end := min(step+larsonRound, steps); step < end; step++ {
				k, n := next(r)
				a.Free(arr[k])
				arr[k] = allocBlock(a, n, step)
			}
			exchange.wait()
		}
	}
	// The last blocks are left to the allocator's Close, after the clock.
	return plan{ops: steps * uint64(threads), goroutines: threads, setup: setup, body: body}
}

// cacheScratch: the blocks goroutine t is given are allocated here, one
// after the other, before the goroutines start (threads.c's main thread).
func cacheScratch(a *zmm.Shared, threads int, ops uint64) plan {
	given := make([]unsafe.Pointer, threads)
	for t := range given {
		given[t] = allocBlock(a, scratchSize, uint64(t))
	}
	return plan{ops: ops, goroutines: threads, body: func(t int) {
		a.Free(given[t]) // next to the others'
		for i := range share(ops, threads, t) {
			b := (*[scratchSize]byte)(allocBlock(a, scratchSize, i))
			for range scratchWrites {
				for k := range b {
					b[k]++
				}
			}
			a.Free(unsafe.Pointer(b))
		}
	}}
}

// pick is a random index in 0..n-1 from 32 random bits (multiply-shift).
func pick(bits32, n uint64) uint64 { return (bits32 * n) >> 32 }

// mstress: one goroutine (the clock's) runs the rounds, each on threads
// fresh goroutines; GOMAXPROCS is threads (the round runner waits while
// they run). A goroutine's steps draw their random numbers as threads.c's.
func mstress(a *zmm.Shared, threads int, ops uint64) plan {
	perRound := uint64(threads) * mstressBatch
	rounds := (ops + perRound - 1) / perRound
	var transfer [transfers]unsafe.Pointer
	locals := make([][mstressBatch]unsafe.Pointer, threads) // reused round after round
	worker := func(round uint64, t int) {
		r := rand.NewPCG(seed, mstressStream+round*uint64(threads)+uint64(t))
		data := &locals[t]
		for i := range uint64(mstressBatch) {
			x := r.Uint64()
			data[i] = allocBlock(a, sizes[x&(nSizes-1)], i)
			if x>>10&1 != 0 { // chance 1/2: free a local block
				if j := pick(x>>32, i+1); data[j] != nil {
					a.Free(data[j])
					data[j] = nil
				}
			}
			if x>>11&3 == 0 { // chance 1/4: swap one into the transfer array
				y := r.Uint64()
				if j := pick(y>>32, i+1); data[j] != nil {
					q := atomic.SwapPointer(&transfer[pick(y&math.MaxUint32, transfers)], data[j])
					data[j] = nil
					if q != nil {
						a.Free(q)
					}
				}
			}
		}
		for i, p := range data {
			if p != nil {
				a.Free(p)
				data[i] = nil
			}
		}
	}
	return plan{ops: rounds * perRound, goroutines: 1, procs: threads, body: func(int) {
		var wg sync.WaitGroup
		for round := range rounds {
			for t := range threads {
				wg.Go(func() { worker(round, t) })
			}
			wg.Wait()
		}
	}, cleanup: func() {
		for _, p := range transfer {
			if p != nil {
				a.Free(p)
			}
		}
	}}
}

// barrier is a reusable barrier for n goroutines.
type barrier struct {
	mu      sync.Mutex
	cond    sync.Cond
	n, in   int
	release uint64 // how many times the barrier has opened
}

func newBarrier(n int) *barrier {
	b := &barrier{n: n}
	b.cond.L = &b.mu
	return b
}

func (b *barrier) wait() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.in++; b.in == b.n {
		b.in = 0
		b.release++
		b.cond.Broadcast()
		return
	}
	for r := b.release; r == b.release; {
		b.cond.Wait()
	}
}

func readResults(path string) ([]Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var rs []Result
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var r Result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		rs = append(rs, r)
	}
	return rs, sc.Err()
}

// Table is a Markdown table of the results: a row per workload and thread
// count, a column per allocator, each cell the median ns/op over the runs
// and, in brackets, the speedup over the same allocator's one-thread
// median (ns/op counts over all threads, so perfect scaling gives a
// speedup equal to the thread count).
func Table(rs []Result) string {
	type key struct {
		workload, alloc string
		threads         int
	}
	type rowKey struct {
		workload string
		threads  int
	}
	ns := map[key][]float64{}
	var allocs []string
	var rows []rowKey
	for _, r := range rs {
		k := key{r.Workload, r.Allocator, r.Threads}
		ns[k] = append(ns[k], r.NsPerOp)
		if !slices.Contains(allocs, r.Allocator) {
			allocs = append(allocs, r.Allocator)
		}
		if rk := (rowKey{r.Workload, r.Threads}); !slices.Contains(rows, rk) {
			rows = append(rows, rk)
		}
	}
	slices.SortFunc(allocs, func(a, b string) int {
		if c := rank(a, allocOrder) - rank(b, allocOrder); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	slices.SortFunc(rows, func(a, b rowKey) int {
		if c := rank(a.workload, workloadOrder) - rank(b.workload, workloadOrder); c != 0 {
			return c
		}
		if c := strings.Compare(a.workload, b.workload); c != 0 {
			return c
		}
		return a.threads - b.threads
	})

	var sb strings.Builder
	sb.WriteString("| workload | threads |")
	for _, a := range allocs {
		sb.WriteString(" " + a + " |")
	}
	sb.WriteString("\n|---|---:|" + strings.Repeat("---:|", len(allocs)) + "\n")
	for _, rk := range rows {
		fmt.Fprintf(&sb, "| %s | %d |", rk.workload, rk.threads)
		for _, a := range allocs {
			v := ns[key{rk.workload, a, rk.threads}]
			if len(v) == 0 {
				sb.WriteString(" – |")
				continue
			}
			m := median(v)
			if one := ns[key{rk.workload, a, 1}]; len(one) > 0 {
				fmt.Fprintf(&sb, " %.1f (%.2f×) |", m, median(one)/m)
			} else {
				fmt.Fprintf(&sb, " %.1f |", m)
			}
		}
		sb.WriteString("\n")
	}
	return sb.String()
}

var (
	allocOrder    = []string{"glibc", "jemalloc", "mimalloc", "zmm"}
	workloadOrder = []string{"churn", "xmalloc", "larson", "cache-scratch", "mstress"}
)

// rank is s's place in order; unknown names go last.
func rank(s string, order []string) int {
	if i := slices.Index(order, s); i >= 0 {
		return i
	}
	return len(order)
}

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}
