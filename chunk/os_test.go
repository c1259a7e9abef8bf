//go:build linux && (amd64 || arm64)

package chunk

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// mapping is one line of /proc/self/maps.
type mapping struct {
	lo, hi uintptr
	name   string
}

func readMaps(t *testing.T) []mapping {
	t.Helper()
	f, err := os.Open("/proc/self/maps")
	require.NoError(t, err)
	defer f.Close()
	var ms []mapping
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		require.GreaterOrEqual(t, len(fields), 5, "maps line %q", sc.Text())
		lo, hi, ok := strings.Cut(fields[0], "-")
		require.True(t, ok, "maps line %q", sc.Text())
		l, err := strconv.ParseUint(lo, 16, 64)
		require.NoError(t, err)
		h, err := strconv.ParseUint(hi, 16, 64)
		require.NoError(t, err)
		m := mapping{lo: uintptr(l), hi: uintptr(h)}
		if len(fields) >= 6 {
			m.name = strings.Join(fields[5:], " ")
		}
		ms = append(ms, m)
	}
	require.NoError(t, sc.Err())
	return ms
}

// mappedIn returns how many bytes of [lo, hi) the mappings in ms cover.
func mappedIn(ms []mapping, lo, hi uintptr) uintptr {
	var n uintptr
	for _, m := range ms {
		a, b := max(m.lo, lo), min(m.hi, hi)
		if a < b {
			n += b - a
		}
	}
	return n
}

// mapped returns how many bytes of [p, p+size) are mapped right now, probing
// every OS page with mincore, which fails with ENOMEM on unmapped pages.
// (/proc/self/maps would do on a real kernel, but qemu-user's emulation of
// it leaves out small guest mappings.)
func mapped(t *testing.T, p unsafe.Pointer, size uintptr) uintptr {
	t.Helper()
	ps := OSPageSize()
	require.Zero(t, uintptr(p)&(ps-1), "probe of an unaligned address %p", p)
	// mincore writes one byte per page of the real kernel, which under
	// qemu-user can be smaller than the emulated OS page.
	var vec [Size / PageSize]byte
	var n uintptr
	for a := uintptr(p); a < uintptr(p)+size; a += ps {
		_, _, errno := unix.Syscall(unix.SYS_MINCORE, a, ps, uintptr(unsafe.Pointer(&vec[0])))
		switch errno {
		case 0:
			n += ps
		case unix.ENOMEM:
		default:
			require.NoError(t, errno, "mincore(%#x)", a)
		}
	}
	return n
}

func bytesAt(p unsafe.Pointer, size uintptr) []byte {
	return unsafe.Slice((*byte)(p), size)
}

// fill writes a pattern that differs from page to page and from seed to
// seed, so that moved or lost pages are noticed.
func fill(b []byte, seed byte) {
	for i := range b {
		b[i] = seed + byte(i>>PageShift) + byte(i)
	}
}

func checkFill(t *testing.T, b []byte, seed byte) {
	t.Helper()
	for i := range b {
		if b[i] != seed+byte(i>>PageShift)+byte(i) {
			assert.Failf(t, "contents changed", "byte %d is %d, want %d", i, b[i], seed+byte(i>>PageShift)+byte(i))
			return
		}
	}
}

func checkZero(t *testing.T, b []byte) {
	t.Helper()
	for i := range b {
		if b[i] != 0 {
			assert.Failf(t, "memory not zero", "byte %d of %d is %d", i, len(b), b[i])
			return
		}
	}
}

func mustMap(t *testing.T, size, align uintptr) unsafe.Pointer {
	t.Helper()
	p, err := Map(size, align)
	require.NoError(t, err)
	require.NotNil(t, p)
	return p
}

func TestOSPageSize(t *testing.T) {
	ps := OSPageSize()
	assert.Equal(t, uintptr(os.Getpagesize()), ps)
	assert.Zero(t, ps&(ps-1), "OS page size %d is not a power of two", ps)
	assert.GreaterOrEqual(t, ps, uintptr(PageSize))
	assert.LessOrEqual(t, ps, uintptr(Size))
	t.Logf("OS page size %d", ps)
}

func TestMapAlignedZeroWritable(t *testing.T) {
	ps := OSPageSize()
	cases := []struct {
		name        string
		size, align uintptr
	}{
		{"one OS page", ps, ps},
		{"one OS page aligned to a chunk", ps, Size},
		{"chunk", Size, Size},
		{"huge 6 MiB", 3 * Size, Size},
		{"huge chunk plus a page", Size + ps, Size},
		{"aligned to 256 MiB", 4 * ps, 256 << 20},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := mustMap(t, c.size, c.align)
			assert.Zero(t, uintptr(p)&(c.align-1), "%p is not aligned to %#x", p, c.align)
			assert.Equal(t, c.size, mapped(t, p, c.size))
			b := bytesAt(p, c.size)
			checkZero(t, b)
			fill(b, 7)
			checkFill(t, b, 7)
			require.NoError(t, Unmap(p, c.size))
		})
	}
}

func TestMapRejectsBadArguments(t *testing.T) {
	ps := OSPageSize()
	for _, c := range []struct{ size, align uintptr }{
		{0, ps},
		{ps + 1, ps},
		{ps / 2, ps},
		{ps, ps / 2},
		{ps, 3 * ps},
		{ps, 0},
		{^uintptr(0) &^ (ps - 1), Size},
	} {
		p, err := Map(c.size, c.align)
		assert.Error(t, err, "Map(%d, %#x)", c.size, c.align)
		assert.Nil(t, p)
	}
}

// TestMapTrimsHeadAndTail forces the slow path (an alignment the first mmap
// almost never meets) and checks that only the aligned range stays mapped:
// the unaligned head and the excess tail of the larger mapping are gone.
func TestMapTrimsHeadAndTail(t *testing.T) {
	ps := OSPageSize()
	const align = 1 << 30
	size := 2 * ps
	before := readMaps(t)
	p := mustMap(t, size, align)
	after := readMaps(t)
	defer func() { require.NoError(t, Unmap(p, size)) }()

	assert.Zero(t, uintptr(p)&(align-1))
	assert.Equal(t, size, mapped(t, p, size))
	// The larger mapping lay inside [p-align+ps, p+align). Unless it
	// happened to start at p (one chance in align/ps) the page before p
	// was part of it, and the page after p+size always was.
	assert.Zero(t, mapped(t, unsafe.Add(p, -int(ps)), ps), "head left mapped")
	assert.Zero(t, mapped(t, unsafe.Add(p, size), ps), "tail left mapped")

	// Where /proc/self/maps is exact (not under qemu-user), check that
	// nothing else stayed mapped around p. The larger mapping lay in the
	// gap around p that was free before Map; other threads of the process
	// may map memory meanwhile, but rarely in that gap.
	if mappedIn(after, uintptr(p), uintptr(p)+size) != size {
		t.Log("/proc/self/maps does not show the mapping; skipping the exact check")
		return
	}
	require.Zero(t, mappedIn(before, uintptr(p), uintptr(p)+size), "Map returned memory that was mapped before")
	lo, hi := uintptr(p)-align+ps, uintptr(p)+align
	for _, m := range before {
		if m.hi <= uintptr(p) {
			lo = max(lo, m.hi)
		}
		if m.lo >= uintptr(p)+size {
			hi = min(hi, m.lo)
		}
	}
	if !assert.Equal(t, size, mappedIn(after, lo, hi), "Map left more than its %d bytes mapped in [%#x, %#x)", size, lo, hi) {
		for _, m := range after {
			if a, b := max(m.lo, lo), min(m.hi, hi); a < b {
				t.Logf("mapped: %#x-%#x %s", a, b, m.name)
			}
		}
	}
}

func vmFlags(t *testing.T, p unsafe.Pointer) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/smaps")
	require.NoError(t, err)
	in := false
	for line := range strings.Lines(string(b)) {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if lo, hi, ok := strings.Cut(fields[0], "-"); ok && !strings.HasSuffix(fields[0], ":") {
			l, err1 := strconv.ParseUint(lo, 16, 64)
			h, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 == nil && err2 == nil {
				in = uintptr(l) <= uintptr(p) && uintptr(p) < uintptr(h)
				continue
			}
		}
		if in && fields[0] == "VmFlags:" {
			return strings.Join(fields[1:], " ")
		}
	}
	return ""
}

func TestHugePages(t *testing.T) {
	assert.Equal(t, os.Getenv("ZMM_HUGE_PAGES") == "1", HugePages())

	// A mapping advised with MADV_HUGEPAGE behaves like any other.
	p, err := mapAligned(2*Size, Size, true)
	require.NoError(t, err)
	defer func() { require.NoError(t, Unmap(p, 2*Size)) }()
	assert.Zero(t, uintptr(p)&(Size-1))
	b := bytesAt(p, 2*Size)
	checkZero(t, b)
	fill(b, 3)
	checkFill(t, b, 3)

	// And the kernel recorded the advice.
	if _, err := os.Stat("/sys/kernel/mm/transparent_hugepage"); err != nil {
		t.Skip("kernel without transparent huge pages")
	}
	flags := vmFlags(t, p)
	require.NotEmpty(t, flags, "no VmFlags in /proc/self/smaps for %p", p)
	if !strings.Contains(" "+flags+" ", " hg ") && runtime.GOARCH == "arm64" {
		t.Skipf("MADV_HUGEPAGE not recorded (qemu-user ignores it): VmFlags %s", flags)
	}
	assert.Contains(t, " "+flags+" ", " hg ", "VmFlags %s", flags)
}

func TestUnmap(t *testing.T) {
	p := mustMap(t, 3*Size, Size)
	require.Equal(t, uintptr(3*Size), mapped(t, p, 3*Size))
	require.NoError(t, Unmap(p, 3*Size))
	assert.Zero(t, mapped(t, p, 3*Size), "range still in /proc/self/maps after Unmap")
}

func TestRelease(t *testing.T) {
	ps := OSPageSize()
	const seed = 0xa5
	size := 8 * ps
	p := mustMap(t, size, ps)
	defer func() { require.NoError(t, Unmap(p, size)) }()
	b := bytesAt(p, size)

	// sub is zmm's page run [off, off+n) when OS pages are larger than
	// zmm's pages; on 4 KiB OS pages it is one whole OS page.
	sub := uintptr(0)
	if ps == PageSize {
		sub = PageSize
	}
	cases := []struct {
		name      string
		off, n    uintptr
		zeroStart uintptr // first released byte
		want      uintptr
	}{
		{"whole mapping", 0, size, 0, size},
		{"whole OS pages", ps, 3 * ps, ps, 3 * ps},
		{"unaligned both ends", 100, 3 * ps, ps, 2 * ps},
		{"unaligned start, aligned end", ps + 1, 2*ps - 1, 2 * ps, ps},
		{"less than an OS page", ps + 1, ps - 2, 0, 0},
		{"straddles one OS page boundary", ps - 8, 16, 0, 0},
		{"one zmm page", PageSize, PageSize, PageSize, sub},
		{"empty", ps, 0, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fill(b, seed)
			got := Release(unsafe.Add(p, c.off), c.n)
			assert.Equal(t, c.want, got)
			assert.Zero(t, got%ps, "released a part of an OS page")
			// Exactly the released bytes read zero; the rest is untouched.
			checkFill(t, b[:c.zeroStart], seed)
			checkZero(t, b[c.zeroStart:c.zeroStart+got])
			end := c.zeroStart + got
			for i := end; i < size; i++ {
				if b[i] != seed+byte(i>>PageShift)+byte(i) {
					assert.Failf(t, "contents changed after the released range", "byte %d", i)
					break
				}
			}
			// The range stays mapped and writable.
			assert.Equal(t, size, mapped(t, p, size))
			fill(b, seed+1)
			checkFill(t, b, seed+1)
		})
	}
}

func TestTruncate(t *testing.T) {
	ps := OSPageSize()
	p := mustMap(t, 3*Size, Size)
	fill(bytesAt(p, 3*Size), 11)

	require.NoError(t, Truncate(p, 3*Size, Size+ps))
	assert.Equal(t, Size+ps, mapped(t, p, 3*Size))
	checkFill(t, bytesAt(p, Size+ps), 11)

	require.NoError(t, Truncate(p, Size+ps, Size+ps), "truncating to the same size is a no-op")
	assert.Error(t, Truncate(p, Size+ps, 2*Size), "truncate must not grow")
	assert.Error(t, Truncate(p, Size+ps, Size+1), "sizes must be OS page multiples")
	assert.Error(t, Truncate(p, Size+ps, 0))

	require.NoError(t, Truncate(p, Size+ps, Size))
	assert.Equal(t, uintptr(Size), mapped(t, p, 3*Size))
	checkFill(t, bytesAt(p, Size), 11)
	require.NoError(t, Unmap(p, Size))
}

func TestExtendIntoFreeRange(t *testing.T) {
	if os.Getenv("ZMM_QEMU_RESERVED_VA") != "" {
		// Set by .ci/run when it runs qemu-user with -R: qemu then keeps
		// every guest range it unmapped reserved on the host, so no
		// mapping can grow in place (zmm moves the pages instead).
		t.Skip("qemu-user with a reserved guest address space (-R) cannot grow a mapping in place")
	}
	// Reserve three chunks and give the last two back, so that the range
	// after the first chunk is known to be free.
	p := mustMap(t, 3*Size, Size)
	require.NoError(t, Truncate(p, 3*Size, Size))
	fill(bytesAt(p, Size), 21)

	require.NoError(t, Extend(p, Size, 3*Size))
	assert.Equal(t, uintptr(3*Size), mapped(t, p, 3*Size))
	checkFill(t, bytesAt(p, Size), 21)
	grown := bytesAt(unsafe.Add(p, Size), 2*Size)
	checkZero(t, grown)
	fill(grown, 22)
	checkFill(t, grown, 22)

	require.NoError(t, Extend(p, 3*Size, 3*Size), "extending to the same size is a no-op")
	assert.Error(t, Extend(p, 3*Size, Size), "extend must not shrink")
	require.NoError(t, Unmap(p, 3*Size))
}

func TestExtendFailsWhenNextRangeIsTaken(t *testing.T) {
	p := mustMap(t, 2*Size, Size)
	require.NoError(t, Truncate(p, 2*Size, Size))
	fill(bytesAt(p, Size), 31)

	// Map the freed chunk again with a plain hint (no MAP_FIXED).
	hint := unsafe.Add(p, Size)
	q, err := unix.MmapPtr(-1, 0, hint, Size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	require.NoError(t, err)
	defer func() { require.NoError(t, Unmap(q, Size)) }()
	if q != hint {
		t.Skipf("kernel ignored the hint %p and mapped %p", hint, q)
	}
	fill(bytesAt(q, Size), 32)

	err = Extend(p, Size, 2*Size)
	require.Error(t, err)
	assert.ErrorIs(t, err, unix.ENOMEM)
	assert.Contains(t, err.Error(), "mremap")
	// Both mappings are untouched.
	checkFill(t, bytesAt(p, Size), 31)
	checkFill(t, bytesAt(q, Size), 32)
	require.NoError(t, Unmap(p, Size))
}

func TestMove(t *testing.T) {
	p := mustMap(t, Size, Size)
	fill(bytesAt(p, Size), 41)

	q, err := Move(p, Size, 3*Size, Size)
	require.NoError(t, err)
	defer func() { require.NoError(t, Unmap(q, 3*Size)) }()
	assert.NotEqual(t, p, q)
	assert.Zero(t, uintptr(q)&(Size-1), "%p is not chunk-aligned", q)
	assert.Zero(t, mapped(t, p, Size), "old range still mapped after Move")
	assert.Equal(t, uintptr(3*Size), mapped(t, q, 3*Size))
	checkFill(t, bytesAt(q, Size), 41)
	grown := bytesAt(unsafe.Add(q, Size), 2*Size)
	checkZero(t, grown)
	fill(grown, 42)
	checkFill(t, grown, 42)
}

func TestMoveFailureKeepsNothing(t *testing.T) {
	// Moving a range that is not mapped fails and leaves no reservation
	// behind.
	p := mustMap(t, Size, Size)
	require.NoError(t, Unmap(p, Size))
	before := readMaps(t)
	q, err := Move(p, Size, 2*Size, Size)
	after := readMaps(t)
	require.Error(t, err)
	assert.Nil(t, q)
	assert.Contains(t, err.Error(), "mremap")
	var added uintptr
	for _, m := range after {
		added += m.hi - m.lo - mappedIn(before, m.lo, m.hi)
	}
	// The Go runtime may map a little meanwhile, never the 4 MiB reserved.
	assert.Less(t, added, uintptr(2*Size), "Move leaked its reservation")
	// p's range was free before the call, so the runtime (the race
	// detector's shadow memory above all) may have mapped a little of it
	// since; a Move that failed halfway would have mapped all of it.
	assert.Less(t, mapped(t, p, Size), uintptr(Size), "Move mapped the old range")
}
