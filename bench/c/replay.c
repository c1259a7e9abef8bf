/*
 * replay.c: replays an allocation trace (docs/TRACE_FORMAT.md, the
 * format package trace reads) on one C allocator, chosen at build time:
 *
 *   -DALLOC_GLIBC     glibc malloc/free/realloc
 *   -DALLOC_JEMALLOC  jemalloc (Debian's libjemalloc exports unprefixed
 *                     malloc, which then serves the whole process)
 *   -DALLOC_MIMALLOC  mi_malloc/mi_free/mi_realloc
 *   -DALLOC_ZEND      PHP's Zend MM through the embed SAPI: _emalloc,
 *                     _efree, _erealloc
 *   -DALLOC_BUMP      the C loop's floor, no allocator to speak of: a
 *                     bump pointer running round a small arena; free and
 *                     realloc's copy do nothing (allocator "bump-c")
 *
 * The semantics are those of trace/replay (the Go replayer of zmm), so the
 * figures compare:
 *   - the whole trace is read (plain or gzip) and validated first, untimed;
 *   - alloc and realloc write the id into the block's first 8 bytes (when it
 *     has 8) and 0xAB into its last byte; free checks the id (for an 8-byte
 *     block, id | 0xAB<<56) and counts mismatches;
 *   - a request end releases every live block: the Zend MM ends its
 *     request in one call (zend_mm_shutdown(heap, 0, 1), what PHP's
 *     shutdown_memory_manager does at the end of a request); the malloc
 *     family frees the request's live blocks one by one;
 *   - only the replay loop is timed (CLOCK_MONOTONIC); the time spent
 *     sampling VmRSS (at each request end before the release, every 16384
 *     records, and after the loop) is subtracted, like the hooks of
 *     trace/replay; peak_rss_bytes is the highest sample, peak_vm_bytes the
 *     highest VmSize seen at the same moments (the address space mapped:
 *     an allocator-neutral measure of the memory a heap takes, touched or
 *     not).
 *
 * Output: one JSON object on stdout. Errors: a message on stderr, exit 1
 * (bad usage 2). A bad trace is rejected with the record's index.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#if defined(ALLOC_ZEND)
#include <sapi/embed/php_embed.h>
#include <zend_alloc.h>
#include <zend_ini.h>
#define ALLOCATOR "zend"
#elif defined(ALLOC_JEMALLOC)
#include <jemalloc/jemalloc.h>
#define ALLOCATOR "jemalloc"
#elif defined(ALLOC_MIMALLOC)
#include <mimalloc.h>
#define ALLOCATOR "mimalloc"
#elif defined(ALLOC_GLIBC)
#include <gnu/libc-version.h>
#include <malloc.h>
#define ALLOCATOR "glibc"
#elif defined(ALLOC_BUMP)
#include <sys/mman.h>
#define ALLOCATOR "bump-c"
#else
#error "define one of ALLOC_GLIBC, ALLOC_JEMALLOC, ALLOC_MIMALLOC, ALLOC_ZEND, ALLOC_BUMP"
#endif

/* ---- the allocator under test ---- */

#if defined(ALLOC_ZEND)
/* The file/line parameters exist in debug builds only (Debian's is a
 * release build: ZEND_FILE_LINE_CC is empty there). */
#define A_MALLOC(n) _emalloc((n) ZEND_FILE_LINE_CC ZEND_FILE_LINE_EMPTY_CC)
#define A_FREE(p) _efree((p) ZEND_FILE_LINE_CC ZEND_FILE_LINE_EMPTY_CC)
#define A_REALLOC(p, n) _erealloc((p), (n) ZEND_FILE_LINE_CC ZEND_FILE_LINE_EMPTY_CC)
#define LIFECYCLE 1
#elif defined(ALLOC_JEMALLOC)
/* Debian's libjemalloc has no prefix: its malloc, free and realloc replace
 * the C library's in the whole process once the binary links it. */
#define A_MALLOC(n) malloc(n)
#define A_FREE(p) free(p)
#define A_REALLOC(p, n) realloc((p), (n))
#define LIFECYCLE 0
#elif defined(ALLOC_MIMALLOC)
#define A_MALLOC(n) mi_malloc(n)
#define A_FREE(p) mi_free(p)
#define A_REALLOC(p, n) mi_realloc((p), (n))
#define LIFECYCLE 0
#elif defined(ALLOC_BUMP)
#define A_MALLOC(n) bump_alloc(n)
#define A_FREE(p) bump_free(p)
#define A_REALLOC(p, n) bump_realloc((p), (n))
#define LIFECYCLE 1
#else
#define A_MALLOC(n) malloc(n)
#define A_FREE(p) free(p)
#define A_REALLOC(p, n) realloc((p), (n))
#define LIFECYCLE 0
#endif

#if defined(ALLOC_BUMP)
/* The floor of the C loop: what replaying a trace costs with an allocator
 * that does next to nothing, so that a table can take it off the real
 * allocators' times (zmmreplay -alloc bump is the same under the Go loop).
 * It must cost less than any allocator could, so:
 *   - a block is the next 16-byte aligned piece of a small arena (4 MiB,
 *     or the largest block if larger) that stays in the cache: when the
 *     next block does not fit, the pointer goes back to the arena's start
 *     (counted in "wraps"); a request end resets it too. The blocks there
 *     are overwritten, and the replay counts their lost stamps as
 *     mismatches, which for the floor are expected and change nothing of
 *     the work. An arena as large as a request's traffic would stream
 *     through cold memory: on the corpus that cost 80 to 300 ns/op, more
 *     than the Zend MM's whole replay;
 *   - free does nothing, and realloc takes a new block and copies nothing
 *     (the replay needs nothing of a block but the stamp, written again
 *     after every realloc). Whether a realloc copies is the allocator's
 *     choice, and so its cost: PHP grows strings by many reallocs of one
 *     block, and copying it each time took the floor to 10 times the Zend
 *     MM's time on the Composer trace;
 *   - every call stays a real call (noinline, and noipa so that GCC keeps
 *     the call to the empty free), as a call into any allocator is one;
 *   - the arena is mapped and faulted in before the timed loop. */
static unsigned char *bump_base, *bump_next, *bump_end;
static uint64_t bump_wraps;

static __attribute__((noinline, noipa)) void *bump_alloc(size_t n)
{
	size_t m = n ? (n + 15) & ~(size_t)15 : 16;
	if ((size_t)(bump_end - bump_next) < m) {
		bump_next = bump_base;
		bump_wraps++;
	}
	void *p = bump_next;
	bump_next += m;
	return p;
}

static __attribute__((noinline, noipa)) void bump_free(void *p) { (void)p; }

static __attribute__((noinline, noipa)) void *bump_realloc(void *p, size_t n)
{
	(void)p;
	return bump_alloc(n);
}
#endif

/* ---- the trace ---- */

enum { OP_ALLOC = 1, OP_FREE = 2, OP_REALLOC = 3, OP_REQUEST_END = 4 };

#define MAX_SIZE (UINT64_C(1) << 48)
#define MAX_IDS (UINT32_C(1) << 26)
#define MAX_RECORDS (UINT64_C(1) << 27)

typedef struct {
	uint8_t op;
	uint32_t id;
	uint64_t size;
} record;

typedef struct {
	record *recs;
	size_t n;
	uint32_t ids; /* one more than the largest id */
	size_t allocs, frees, reallocs, request_ends, max_live;
} trace_t;

static const char *op_name(uint8_t op)
{
	switch (op) {
	case OP_ALLOC: return "alloc";
	case OP_FREE: return "free";
	case OP_REALLOC: return "realloc";
	case OP_REQUEST_END: return "request-end";
	}
	return "unknown";
}

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("replay-" ALLOCATOR ": ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static uint32_t le32(const unsigned char *b)
{
	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static uint64_t le64(const unsigned char *b) { return (uint64_t)le32(b) | (uint64_t)le32(b + 4) << 32; }

/* read_full reads up to len bytes; it returns the count (short only at the
 * end of the stream) and dies on a read or gzip error. */
static size_t read_full(gzFile f, const char *path, unsigned char *buf, size_t len, long long index)
{
	size_t n = 0;
	while (n < len) {
		int m = gzread(f, buf + n, (unsigned)(len - n));
		if (m < 0) {
			int errnum;
			const char *msg = gzerror(f, &errnum);
			if (index < 0)
				die("%s: trace: header: read: %s", path, errnum == Z_ERRNO ? strerror(errno) : msg);
			die("%s: trace: record %lld: read: %s", path, index, errnum == Z_ERRNO ? strerror(errno) : msg);
		}
		if (m == 0) {
			/* the end, or a gzip stream cut short (Z_BUF_ERROR) */
			int errnum;
			gzerror(f, &errnum);
			if (errnum == Z_BUF_ERROR) {
				if (index < 0)
					die("%s: trace: header: gzip: unexpected EOF", path);
				die("%s: trace: record %lld: gzip: unexpected EOF", path, index + (long long)(n / 16));
			}
			break;
		}
		n += (size_t)m;
	}
	return n;
}

#define BAD(i, ...)                                                                       \
	do {                                                                              \
		fprintf(stderr, "replay-" ALLOCATOR ": %s: trace: record %zu: ", path, (size_t)(i)); \
		fprintf(stderr, __VA_ARGS__);                                             \
		fputc('\n', stderr);                                                      \
		exit(1);                                                                  \
	} while (0)

/* read_trace reads and validates the whole trace at path, as trace.Read
 * does (same checks, same messages). */
static void read_trace(const char *path, trace_t *t)
{
	gzFile f = gzopen(path, "rb");
	if (!f)
		die("%s: %s", path, errno ? strerror(errno) : "cannot open");
	gzbuffer(f, 1 << 16);
	unsigned char h[16];
	size_t n = read_full(f, path, h, sizeof h, -1);
	if (n < 16)
		die("%s: trace: header: truncated header: %zu of 16 bytes", path, n);
	if (memcmp(h, "ZMMTRACE", 8) != 0)
		die("%s: trace: header: bad magic (want \"ZMMTRACE\")", path);
	if (le32(h + 8) != 1)
		die("%s: trace: header: unsupported version %" PRIu32 " (want 1)", path, le32(h + 8));
	if (le32(h + 12) != 0)
		die("%s: trace: header: reserved field is %#" PRIx32 " (must be 0)", path, le32(h + 12));

	memset(t, 0, sizeof *t);
	size_t cap = 0;
	/* live: a bitset of the live ids; since: the ids allocated since the
	 * last request end (cleared at the next one), or since_full when that
	 * list got as long as the bitset. */
	uint64_t *live = NULL;
	size_t live_words = 0;
	uint32_t *since = NULL;
	size_t nsince = 0, since_cap = 0;
	bool since_full = false;
	size_t nlive = 0;
	unsigned char b[4096 * 16];
	for (;;) {
		size_t got = read_full(f, path, b, sizeof b, (long long)t->n);
		if (got % 16)
			BAD(t->n + got / 16, "truncated record: %zu of 16 bytes (a trace is 16 + 16·k bytes long)", got % 16);
		for (size_t j = 0; j < got; j += 16) {
			size_t i = t->n;
			if (i >= MAX_RECORDS)
				BAD(i, "too many records (at most %" PRIu64 ")", MAX_RECORDS);
			record r = {.op = b[j], .id = le32(b + j + 4), .size = le64(b + j + 8)};
			if (r.op < OP_ALLOC || r.op > OP_REQUEST_END)
				BAD(i, "unknown op %u", r.op);
			if (b[j + 1] | b[j + 2] | b[j + 3])
				BAD(i, "%s: padding bytes 1..3 are %02x %02x %02x (must be 0)", op_name(r.op), b[j + 1], b[j + 2], b[j + 3]);
			if (r.op == OP_REQUEST_END) {
				if (r.id != 0)
					BAD(i, "request end with id %" PRIu32 " (must be 0)", r.id);
				if (r.size != 0)
					BAD(i, "request end with size %" PRIu64 " (must be 0)", r.size);
				if (since_full)
					memset(live, 0, live_words * 8);
				else
					for (size_t k = 0; k < nsince; k++)
						live[since[k] >> 6] &= ~(UINT64_C(1) << (since[k] & 63));
				nsince = 0;
				since_full = false;
				nlive = 0;
				t->request_ends++;
			} else {
				if (r.id >= MAX_IDS)
					BAD(i, "%s of id %" PRIu32 ": ids must be below %" PRIu32, op_name(r.op), r.id, MAX_IDS);
				if (r.size > MAX_SIZE)
					BAD(i, "%s of id %" PRIu32 " with size %" PRIu64 ", above 2^48", op_name(r.op), r.id, r.size);
				size_t w = r.id >> 6;
				uint64_t bit = UINT64_C(1) << (r.id & 63);
				bool is_live = w < live_words && (live[w] & bit);
				switch (r.op) {
				case OP_ALLOC:
					if (is_live)
						BAD(i, "alloc of id %" PRIu32 ", which is already live", r.id);
					if (w >= live_words) {
						size_t nw = live_words * 2;
						if (nw < w + 1)
							nw = w + 1;
						if (nw < 16)
							nw = 16;
						if (nw > MAX_IDS / 64)
							nw = MAX_IDS / 64;
						live = realloc(live, nw * 8);
						if (!live)
							die("out of memory reading the trace");
						memset(live + live_words, 0, (nw - live_words) * 8);
						live_words = nw;
					}
					live[w] |= bit;
					if (!since_full) {
						if (nsince >= (live_words > 64 ? live_words : 64)) {
							nsince = 0;
							since_full = true;
						} else {
							if (nsince == since_cap) {
								since_cap = since_cap ? 2 * since_cap : 64;
								since = realloc(since, since_cap * sizeof *since);
								if (!since)
									die("out of memory reading the trace");
							}
							since[nsince++] = r.id;
						}
					}
					nlive++;
					if (nlive > t->max_live)
						t->max_live = nlive;
					if (r.id + 1 > t->ids)
						t->ids = r.id + 1;
					t->allocs++;
					break;
				case OP_FREE:
					if (r.size != 0)
						BAD(i, "free of id %" PRIu32 " with size %" PRIu64 " (must be 0)", r.id, r.size);
					if (!is_live)
						BAD(i, "free of id %" PRIu32 ", which is not live", r.id);
					live[w] &= ~bit;
					nlive--;
					t->frees++;
					break;
				case OP_REALLOC:
					if (!is_live)
						BAD(i, "realloc of id %" PRIu32 ", which is not live", r.id);
					t->reallocs++;
					break;
				}
			}
			if (t->n == cap) {
				cap = cap ? 2 * cap : 1 << 16;
				t->recs = realloc(t->recs, cap * sizeof *t->recs);
				if (!t->recs)
					die("out of memory reading the trace");
			}
			t->recs[t->n++] = r;
		}
		if (got < sizeof b)
			break;
	}
	gzclose(f);
	free(live);
	free(since);
}

/* ---- the live table, as in trace/replay ---- */

/* A slot is live when gen is the current request's generation, so a
 * request end clears nothing. */
typedef struct {
	void *p;
	uint64_t size;
	uint32_t gen;
} slot;

/* Ids are their own slots unless the trace's ids are sparse; then they are
 * renumbered before the timed loop (NewIndex in trace/replay). */
typedef struct {
	size_t n;
	int32_t *remap; /* per record its slot, or NULL */
	uint32_t *ids;  /* per slot its id, when remapped */
} index_t;

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static void new_index(const trace_t *t, index_t *ix)
{
	memset(ix, 0, sizeof *ix);
	long long max_id = -1;
	for (size_t i = 0; i < t->n; i++)
		if (t->recs[i].op != OP_REQUEST_END && (long long)t->recs[i].id > max_id)
			max_id = t->recs[i].id;
	if (max_id < 2 * (long long)t->n + 1024) {
		ix->n = (size_t)(max_id + 1);
		return;
	}
	uint32_t *ids = malloc((t->n ? t->n : 1) * sizeof *ids);
	ix->remap = calloc(t->n ? t->n : 1, sizeof *ix->remap);
	if (!ids || !ix->remap)
		die("out of memory indexing the trace");
	size_t m = 0;
	for (size_t i = 0; i < t->n; i++)
		if (t->recs[i].op != OP_REQUEST_END)
			ids[m++] = t->recs[i].id;
	qsort(ids, m, sizeof *ids, cmp_u32);
	size_t u = 0;
	for (size_t i = 0; i < m; i++)
		if (u == 0 || ids[u - 1] != ids[i])
			ids[u++] = ids[i];
	for (size_t i = 0; i < t->n; i++) {
		if (t->recs[i].op == OP_REQUEST_END)
			continue;
		uint32_t *hit = bsearch(&t->recs[i].id, ids, u, sizeof *ids, cmp_u32);
		ix->remap[i] = (int32_t)(hit - ids);
	}
	ix->ids = ids;
	ix->n = u;
}

/* ---- measuring ---- */

static int statm_fd = -1;
static long page_size;

/* statm_now reads VmSize and VmRSS from /proc/self/statm (its first two
 * fields, in pages); both are 0 when it cannot be read. */
static void statm_now(uint64_t *vm, uint64_t *rss)
{
	char buf[128];
	*vm = *rss = 0;
	if (statm_fd < 0)
		return;
	ssize_t n = pread(statm_fd, buf, sizeof buf - 1, 0);
	if (n <= 0)
		return;
	buf[n] = 0;
	unsigned long long size, resident;
	if (sscanf(buf, "%llu %llu", &size, &resident) != 2)
		return;
	*vm = (uint64_t)size * (uint64_t)page_size;
	*rss = (uint64_t)resident * (uint64_t)page_size;
}

/* cpu_ns is the process's CPU time, user and system (getrusage). */
static uint64_t cpu_ns(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000u +
	       ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000u;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- the replay ---- */

static bool verbose;

typedef struct {
	uint64_t duration_ns, hook_ns;
	uint64_t cpu_ns; /* process CPU time of the loop, hooks included */
	uint64_t mismatches;
	uint64_t requests;
	uint64_t peak_rss, base_rss;
	uint64_t peak_vm, base_vm;
	uint64_t peak_usage, real_peak_usage; /* the Zend MM's own peaks */
	const char *error;                    /* set when the replay stopped */
	size_t error_index;
} result_t;

typedef struct {
	const trace_t *t;
	index_t ix;
	slot *live;
	uint32_t gen;
	/* malloc family: the slots allocated in this request (with repeats:
	 * a slot freed and allocated again is listed twice), freed at the
	 * request end */
	int32_t *req_slots;
	size_t nreq, req_cap;
	result_t res;
} run_t;

#if defined(ALLOC_ZEND)
static zend_mm_heap *zheap;     /* the heap the blocks come from */
static bool php_request_mode;   /* --zend-request=php */
static void zend_memory_limit_off(void);
#endif

/* stamp is what the first 8 bytes of a block of size >= 8 hold after mark. */
static inline uint64_t stamp(uint32_t id, uint64_t size)
{
	return size == 8 ? ((uint64_t)id | UINT64_C(0xAB) << 56) : (uint64_t)id;
}

static inline void mark(void *p, uint64_t size, uint32_t id)
{
	if (size >= 8) {
		uint64_t v = id;
		memcpy(p, &v, 8);
	}
	if (size > 0)
		((unsigned char *)p)[size - 1] = 0xAB;
}

static inline bool stamp_ok(const void *p, uint64_t size, uint32_t id)
{
	if (size < 8)
		return true;
	uint64_t v;
	memcpy(&v, p, 8);
	return v == stamp(id, size);
}

static inline uint32_t id_of(const run_t *z, int32_t k)
{
	return z->ix.remap ? z->ix.ids[k] : (uint32_t)k;
}

/* compact_req drops the dead and repeated entries of req_slots, so that a
 * trace without request ends keeps the list no longer than the live set.
 * A slot listed twice (freed and allocated again) is kept once. */
#if !LIFECYCLE
static void compact_req(run_t *z)
{
	const uint32_t kept = UINT32_MAX; /* gen never reaches it */
	size_t m = 0;
	for (size_t i = 0; i < z->nreq; i++) {
		slot *b = &z->live[z->req_slots[i]];
		if (b->gen == z->gen) {
			b->gen = kept;
			z->req_slots[m++] = z->req_slots[i];
		}
	}
	for (size_t i = 0; i < m; i++)
		z->live[z->req_slots[i]].gen = z->gen;
	z->nreq = m;
	if (z->nreq * 2 > z->req_cap) {
		z->req_cap *= 2;
		z->req_slots = realloc(z->req_slots, z->req_cap * sizeof *z->req_slots);
		if (!z->req_slots)
			die("out of memory");
	}
}
#endif

static void print_verbose(run_t *z, uint64_t request);

/* sample_rss keeps the highest VmRSS seen; it runs at each request end
 * before the release, every SAMPLE_EVERY records (where trace/replay calls
 * its progress hook) and once after the loop. Its time is not counted. */
#define SAMPLE_EVERY (1 << 14)

static void sample_rss(run_t *z, uint64_t request, bool at_request_end)
{
	uint64_t t0 = now_ns();
	uint64_t vm, rss;
	statm_now(&vm, &rss);
	if (rss > z->res.peak_rss)
		z->res.peak_rss = rss;
	if (vm > z->res.peak_vm)
		z->res.peak_vm = vm;
	if (verbose && at_request_end && request == 1)
		print_verbose(z, request);
	z->res.hook_ns += now_ns() - t0;
}

/* note_peaks keeps the highest peak_usage and real_peak_usage the Zend MM
 * has reported (the other allocators have no such counters). */
static void note_peaks(run_t *z)
{
#if defined(ALLOC_ZEND)
	size_t peak = zend_memory_peak_usage(false), real_peak = zend_memory_peak_usage(true);
	if (peak > z->res.peak_usage)
		z->res.peak_usage = peak;
	if (real_peak > z->res.real_peak_usage)
		z->res.real_peak_usage = real_peak;
#else
	(void)z;
#endif
}

/* request_end releases every live block. */
static void request_end(run_t *z, uint64_t request)
{
	note_peaks(z);
	sample_rss(z, request, true);
#if defined(ALLOC_ZEND)
	if (php_request_mode) {
		/* The whole PHP request ends and a new one starts: the engine's
		 * shutdown calls shutdown_memory_manager(silent, 0), i.e.
		 * zend_mm_shutdown(heap, 0, silent), among much else. */
		php_request_shutdown(NULL);
		if (php_request_startup() == FAILURE)
			die("php_request_startup failed");
		zend_memory_limit_off();
	} else {
		zend_mm_shutdown(zheap, false, true);
	}
#elif defined(ALLOC_BUMP)
	bump_next = bump_base;
#else
	for (size_t i = 0; i < z->nreq; i++) {
		int32_t k = z->req_slots[i];
		slot *b = &z->live[k];
		if (b->gen == z->gen) {
			if (!stamp_ok(b->p, b->size, id_of(z, k)))
				z->res.mismatches++;
			A_FREE(b->p);
			b->gen = 0;
		}
	}
	z->nreq = 0;
#endif
	z->gen++;
}

#define STOP(msg)                          \
	do {                               \
		z->res.error = (msg);      \
		z->res.error_index = i;    \
		goto out;                  \
	} while (0)

static __attribute__((noinline)) void replay_loop(run_t *z)
{
	const record *recs = z->t->recs;
	size_t n = z->t->n;
	slot *live = z->live;
	uint64_t request = 0;
	uint64_t c0 = cpu_ns();
	uint64_t t0 = now_ns();
	size_t i;
	for (i = 0; i < n; i++) {
		const record *r = &recs[i];
		if (i % SAMPLE_EVERY == 0 && i > 0)
			sample_rss(z, request + 1, false);
		if (r->op == OP_REQUEST_END) {
			request++;
			request_end(z, request);
			continue;
		}
		int32_t k;
		if (z->ix.remap) {
			k = z->ix.remap[i];
		} else {
			if (r->id >= z->ix.n)
				STOP("id out of range");
			k = (int32_t)r->id;
		}
		slot *b = &live[k];
		switch (r->op) {
		case OP_ALLOC:
			if (b->gen == z->gen)
				STOP("id is already live");
			b->p = A_MALLOC(r->size);
			if (!b->p && r->size)
				STOP("out of memory");
			b->size = r->size;
			b->gen = z->gen;
			mark(b->p, r->size, r->id);
#if !LIFECYCLE
			if (z->nreq == z->req_cap)
				compact_req(z);
			z->req_slots[z->nreq++] = k;
#endif
			break;
		case OP_FREE:
			if (b->gen != z->gen)
				STOP("id is not live");
			if (!stamp_ok(b->p, b->size, r->id))
				z->res.mismatches++;
			A_FREE(b->p);
			b->gen = 0;
			break;
		case OP_REALLOC: {
			if (b->gen != z->gen)
				STOP("id is not live");
			/* realloc(p, 0) of glibc frees p and returns NULL: the
			 * slot then holds NULL, which free and realloc accept. */
			void *p = A_REALLOC(b->p, r->size);
			if (!p && r->size)
				STOP("out of memory");
			b->p = p;
			b->size = r->size;
			mark(b->p, r->size, r->id);
			break;
		}
		default:
			STOP("unknown op");
		}
	}
out:
	z->res.duration_ns = now_ns() - t0 - z->res.hook_ns;
	z->res.cpu_ns = cpu_ns() - c0;
	if (!z->res.error && n > 0 && recs[n - 1].op != OP_REQUEST_END) {
		/* the last request has no request end: its blocks stay live, as
		 * in trace/replay; sample the RSS (untimed) */
		note_peaks(z);
		sample_rss(z, request + 1, true);
	}
	if (z->res.error)
		z->res.error_index = i;
}

/* ---- allocator-specific set-up and checks ---- */

#if defined(ALLOC_BUMP)
/* BUMP_ARENA is the arena's size (ZMM_BUMP_ARENA, in bytes, overrides it):
 * small enough to stay in the cache, large enough that most blocks live
 * out their lives before the pointer comes round. */
#define BUMP_ARENA (UINT64_C(4) << 20)

/* bump_init maps the arena, never smaller than the trace's largest block,
 * and faults it in (MAP_POPULATE). */
static void bump_init(const trace_t *t)
{
	uint64_t size = BUMP_ARENA;
	const char *env = getenv("ZMM_BUMP_ARENA");
	if (env && *env) {
		char *end;
		size = strtoull(env, &end, 10);
		if (*end || size == 0)
			die("ZMM_BUMP_ARENA wants a size in bytes, not %s", env);
	}
	for (size_t i = 0; i < t->n; i++) {
		const record *r = &t->recs[i];
		uint64_t m = r->size ? (r->size + 15) & ~UINT64_C(15) : 16;
		if (r->op != OP_FREE && r->op != OP_REQUEST_END && m > size)
			size = m;
	}
	size = (size + 4095) & ~UINT64_C(4095);
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_POPULATE, -1, 0);
	if (p == MAP_FAILED)
		die("mapping the bump arena (%" PRIu64 " bytes): %s", size, strerror(errno));
	bump_base = bump_next = p;
	bump_end = bump_base + size;
}
#endif

#if defined(ALLOC_ZEND)
static void zend_memory_limit_off(void)
{
	/* memory_limit=-1 for the engine's own heap (the INI setting of the
	 * request), and no limit on the heap the blocks come from. */
	zend_string *name = zend_string_init("memory_limit", sizeof("memory_limit") - 1, false);
	if (zend_alter_ini_entry_chars(name, "-1", 2, PHP_INI_SYSTEM, PHP_INI_STAGE_RUNTIME) != SUCCESS)
		die("cannot set memory_limit=-1");
	zend_string_release(name);
	if (zend_set_memory_limit((size_t)ZEND_LONG_MAX) != SUCCESS)
		die("zend_set_memory_limit failed");
}
#endif

static void print_verbose(run_t *z, uint64_t request)
{
	/* Proof that the blocks come from the allocator under test: its own
	 * counters, read while the first request's blocks are live. */
	size_t nlive = 0;
	uint64_t bytes = 0;
	void *some = NULL;
	for (size_t k = 0; k < z->ix.n; k++)
		if (z->live[k].gen == z->gen) {
			nlive++;
			bytes += z->live[k].size;
			if (!some && z->live[k].p)
				some = z->live[k].p;
		}
	fprintf(stderr, "replay-%s: at the end of request %" PRIu64 ": %zu live blocks, %" PRIu64 " bytes requested\n",
		ALLOCATOR, request, nlive, bytes);
#if defined(ALLOC_ZEND)
	fprintf(stderr,
		"  PHP %s (ZEND_DEBUG=%d), heap %p (%s), AG(mm_heap) %p, is_zend_mm() %d, is_zend_ptr(a live block) %d\n"
		"  zend_memory_usage(): %zu bytes, real %zu; peak %zu, real peak %zu\n"
		"  memory_limit INI: %s\n",
		PHP_VERSION, ZEND_DEBUG, (void *)zheap, php_request_mode ? "the request's own heap" : "a heap of its own from zend_mm_startup",
		(void *)zend_mm_get_heap(), is_zend_mm(), some ? is_zend_ptr(some) : -1, zend_memory_usage(false),
		zend_memory_usage(true), zend_memory_peak_usage(false), zend_memory_peak_usage(true),
		zend_ini_string_ex("memory_limit", sizeof("memory_limit") - 1, 0, NULL));
#elif defined(ALLOC_JEMALLOC)
	uint64_t epoch = 1;
	size_t sz = sizeof epoch;
	mallctl("epoch", &epoch, &sz, &epoch, sz);
	size_t allocated = 0, resident = 0;
	const char *version = "?";
	sz = sizeof allocated;
	mallctl("stats.allocated", &allocated, &sz, NULL, 0);
	sz = sizeof resident;
	mallctl("stats.resident", &resident, &sz, NULL, 0);
	sz = sizeof version;
	mallctl("version", &version, &sz, NULL, 0);
	fprintf(stderr, "  jemalloc %s: stats.allocated %zu bytes, stats.resident %zu; malloc_usable_size(a live block) %zu\n",
		version, allocated, resident, some ? malloc_usable_size(some) : 0);
#elif defined(ALLOC_MIMALLOC)
	fprintf(stderr, "  mimalloc %d: mi_is_in_heap_region(a live block) %d, mi_usable_size %zu\n", mi_version(),
		some ? mi_is_in_heap_region(some) : -1, some ? mi_usable_size(some) : 0);
#elif defined(ALLOC_BUMP)
	fprintf(stderr, "  bump arena %p, %zu bytes, %zu bumped this request, %" PRIu64 " wraps; a live block %s it\n",
		(void *)bump_base, (size_t)(bump_end - bump_base), (size_t)(bump_next - bump_base), bump_wraps,
		some && (unsigned char *)some >= bump_base && (unsigned char *)some < bump_end ? "is in" : "is NOT in");
#else
	struct mallinfo2 mi = mallinfo2();
	fprintf(stderr, "  glibc %s: mallinfo2: in use %zu bytes (arena %zu, mmapped %zu)\n", gnu_get_libc_version(),
		mi.uordblks + mi.hblkhd, mi.arena, mi.hblkhd);
#endif
}

static void usage(void)
{
	fprintf(stderr,
		"usage: replay-%s [--verbose]%s TRACE\n"
		"Replays the allocation trace TRACE (.ztrace or .ztrace.gz) on %s and prints one JSON object.\n",
		ALLOCATOR,
#if defined(ALLOC_ZEND)
		" [--zend-request=heap|php]",
#else
		"",
#endif
		ALLOCATOR);
	exit(2);
}

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) {
			verbose = true;
		} else if (!strcmp(a, "--version")) {
			printf("replay-%s\n", ALLOCATOR);
			return 0;
#if defined(ALLOC_ZEND)
		} else if (!strcmp(a, "--zend-request=heap")) {
			php_request_mode = false;
		} else if (!strcmp(a, "--zend-request=php")) {
			php_request_mode = true;
#endif
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "replay-%s: unknown flag %s\n", ALLOCATOR, a);
			usage();
		} else if (path) {
			usage();
		} else {
			path = a;
		}
	}
	if (!path)
		usage();
	page_size = sysconf(_SC_PAGESIZE);
	statm_fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);

	trace_t t;
	read_trace(path, &t); /* untimed */

	run_t z;
	memset(&z, 0, sizeof z);
	z.t = &t;
	z.gen = 1;
	new_index(&t, &z.ix);
	/* The live table and the trace come from the C library's malloc (or
	 * jemalloc's, which replaces it), never from the allocator under test
	 * when it is a separate one. */
	z.live = calloc(z.ix.n ? z.ix.n : 1, sizeof *z.live);
	if (!z.live)
		die("out of memory for the live table");
#if !LIFECYCLE
	z.req_cap = 1024 + 2 * z.ix.n;
	z.req_slots = malloc(z.req_cap * sizeof *z.req_slots);
	if (!z.req_slots)
		die("out of memory");
	/* touch the tables so their pages count in the base RSS */
	memset(z.req_slots, 0, z.req_cap * sizeof *z.req_slots);
#endif
	for (size_t i = 0; i < t.n; i++)
		if (t.recs[i].op == OP_REQUEST_END)
			z.res.requests++;
	if (t.n > 0 && t.recs[t.n - 1].op != OP_REQUEST_END)
		z.res.requests++;

#if defined(ALLOC_ZEND)
	/* The embed SAPI: module start-up and a request (RINIT). */
	if (php_embed_init(0, NULL) == FAILURE)
		die("php_embed_init failed");
	zend_memory_limit_off();
	zend_mm_heap *request_heap = zend_mm_get_heap();
	if (php_request_mode) {
		zheap = request_heap;
	} else {
		/* A pristine heap of its own, as zmm's replay gets a new heap:
		 * _emalloc & co. allocate from AG(mm_heap), so it is swapped in
		 * for the replay. zend_mm_startup builds a plain Zend MM heap
		 * (no custom handlers, whatever USE_ZEND_ALLOC says) with no
		 * memory limit. */
		zheap = zend_mm_startup();
		zend_mm_set_heap(zheap);
		if (zend_set_memory_limit((size_t)ZEND_LONG_MAX) != SUCCESS)
			die("zend_set_memory_limit failed");
	}
	if (zend_mm_is_custom_heap(zheap))
		die("the Zend MM heap has custom handlers (USE_ZEND_ALLOC=0?): not measuring the Zend MM");
#endif

#if defined(ALLOC_BUMP)
	bump_init(&t);
#endif
	statm_now(&z.res.base_vm, &z.res.base_rss);
	z.res.peak_rss = z.res.base_rss;
	z.res.peak_vm = z.res.base_vm;

#if defined(ALLOC_ZEND)
	volatile bool bailed = false;
	zend_try {
		replay_loop(&z);
	} zend_catch {
		bailed = true;
	} zend_end_try();
	if (bailed)
		die("%s: the Zend MM bailed out (a fatal error, reported above) during the replay", path);
#else
	replay_loop(&z);
#endif
	if (z.res.error) {
		const record *r = &t.recs[z.res.error_index];
		die("%s: replay: record %zu (%s id=%" PRIu32 " size=%" PRIu64 "): %s", path, z.res.error_index, op_name(r->op), r->id,
		    r->size, z.res.error);
	}

	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	printf("{\"allocator\":");
	json_str(ALLOCATOR);
	printf(",\"trace\":");
	json_str(base);
	/* loop: which replay loop ran, so that a table can take off that
	 * loop's floor (bump-c here, bump-go in zmmreplay) */
	printf(",\"loop\":\"c\"");
	printf(",\"ops\":%zu,\"duration_ns\":%" PRIu64 ",\"ns_per_op\":%.3f", t.n, z.res.duration_ns,
	       t.n ? (double)z.res.duration_ns / (double)t.n : 0.0);
	printf(",\"cpu_ns\":%" PRIu64, z.res.cpu_ns);
	printf(",\"peak_rss_bytes\":%" PRIu64 ",\"base_rss_bytes\":%" PRIu64 ",\"maxrss_bytes\":%" PRIu64, z.res.peak_rss,
	       z.res.base_rss, (uint64_t)ru.ru_maxrss * 1024);
	printf(",\"peak_vm_bytes\":%" PRIu64 ",\"base_vm_bytes\":%" PRIu64, z.res.peak_vm, z.res.base_vm);
	printf(",\"mismatches\":%" PRIu64 ",\"requests\":%" PRIu64, z.res.mismatches, z.res.requests);
	printf(",\"allocs\":%zu,\"frees\":%zu,\"reallocs\":%zu,\"max_live\":%zu", t.allocs, t.frees, t.reallocs, t.max_live);
#if defined(ALLOC_ZEND)
	printf(",\"peak_usage\":%" PRIu64 ",\"real_peak_usage\":%" PRIu64 ",\"zend_request\":\"%s\",\"php_version\":\"%s\"",
	       z.res.peak_usage, z.res.real_peak_usage, php_request_mode ? "php" : "heap", PHP_VERSION);
#elif defined(ALLOC_BUMP)
	printf(",\"arena_bytes\":%zu,\"wraps\":%" PRIu64, (size_t)(bump_end - bump_base), bump_wraps);
#endif
	printf("}\n");
	fflush(stdout);

#if defined(ALLOC_ZEND)
	if (!php_request_mode) {
		zend_mm_set_heap(request_heap);
		zend_mm_shutdown(zheap, true, true); /* unmaps the heap and its blocks */
	}
	php_embed_shutdown();
#else
	/* the last request's blocks, when it has no request end */
	for (size_t i = 0; i < z.nreq; i++) {
		slot *b = &z.live[z.req_slots[i]];
		if (b->gen == z.gen) {
			A_FREE(b->p);
			b->gen = 0;
		}
	}
#endif
	return 0;
}
