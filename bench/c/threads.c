/*
 * threads.c: the C side of issue 18's concurrency benchmarks: one workload
 * on N pthreads, on the allocator the binary is linked with. The code calls
 * plain malloc and free; the build (threads.sh) picks who serves them:
 *
 *   -DALLOC_GLIBC                 glibc
 *   -DALLOC_JEMALLOC -ljemalloc   Debian's libjemalloc, which exports
 *                                 unprefixed malloc/free
 *   -DALLOC_MIMALLOC -lmimalloc   Debian's libmimalloc, built to override
 *                                 malloc/free
 *
 * The define names the allocator in the output and selects a check, made
 * before the workload, that malloc really is that allocator's.
 *
 * The workloads are those of bench/shared_test.go, with its block sizes
 * (churnSizes: 1024 sizes uniform in 16..3072, from Go's PCG with the same
 * seeds, reproduced bit for bit below); bench/c/zmmthreads runs the same
 * three on zmm's Shared. OPS counts over all threads, and ns/op is wall
 * time over OPS, so perfect scaling divides it by the thread count:
 *
 *   churn    every thread keeps a ring of 64 live blocks and replaces one
 *            per op (BenchmarkSharedLocalChurn); op = one alloc+free pair
 *   xmalloc  max(THREADS/2, 1) producer/consumer pairs (so one pair, two
 *            threads, for THREADS=1): the producer allocates batches of 256
 *            blocks and hands each to its consumer through a queue of 4
 *            batches, the consumer frees them: every free is a remote one
 *            (BenchmarkSharedProducerConsumer); op = one block. OPS is
 *            rounded up to whole batches
 *   larson   every thread owns an array of 1000 random blocks, filled
 *            before the clock starts; a step frees a random slot and
 *            allocates a new block into it. Every 10,000 steps the threads
 *            meet at a barrier and pass the arrays on round-robin, so most
 *            blocks are freed by a thread that did not allocate them (after
 *            Larson and Krishnan's server benchmark); op = one step. OPS is
 *            rounded up to a multiple of THREADS
 *
 * Every block gets its first 8 bytes written, so that each is touched.
 * Only the workload is timed (CLOCK_MONOTONIC): from the moment all threads
 * are started and waiting at the start line to the last one's exit.
 *
 * Output: one JSON object on stdout. Errors: a message on stderr, exit 1
 * (bad usage 2).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(ALLOC_JEMALLOC)
#include <jemalloc/jemalloc.h>
#define ALLOCATOR "jemalloc"
#elif defined(ALLOC_MIMALLOC)
#include <mimalloc.h>
#define ALLOCATOR "mimalloc"
#elif defined(ALLOC_GLIBC)
#include <malloc.h>
#define ALLOCATOR "glibc"
#else
#error "define one of ALLOC_GLIBC, ALLOC_JEMALLOC, ALLOC_MIMALLOC"
#endif

enum {
	NSIZES = 1024,          /* churnSizes' length (a power of two) */
	RING = 64,              /* churn: live blocks per thread (a power of two) */
	BATCH = 256,            /* xmalloc: blocks per batch */
	QUEUE = 4,              /* xmalloc: batches in flight per pair */
	LARSON_SLOTS = 1000,    /* larson: blocks per array */
	LARSON_ROUND = 10000,   /* larson: steps between two exchanges */
	MAX_THREADS = 1024,
};

/* The seeds of bench/shared_test.go: bench's seed ("zmm") and churnSizes'
 * stream; the larson threads use streams LARSON_STREAM + thread. */
#define SEED UINT64_C(0x5a6d6d)
#define SIZES_STREAM 18
#define LARSON_STREAM 1000

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("threads-" ALLOCATOR ": ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

/* ---- Go's math/rand/v2 PCG (128-bit LCG, DXSM output) and IntN ---- */

typedef struct {
	unsigned __int128 state; /* NewPCG(seed1, seed2): hi = seed1, lo = seed2 */
} pcg;

static pcg pcg_new(uint64_t seed1, uint64_t seed2)
{
	return (pcg){(unsigned __int128)seed1 << 64 | seed2};
}

static uint64_t pcg_uint64(pcg *p)
{
	const unsigned __int128 mul =
		(unsigned __int128)UINT64_C(2549297995355413924) << 64 | UINT64_C(4865540595714422341);
	const unsigned __int128 inc =
		(unsigned __int128)UINT64_C(6364136223846793005) << 64 | UINT64_C(1442695040888963407);
	p->state = p->state * mul + inc;
	uint64_t hi = (uint64_t)(p->state >> 64), lo = (uint64_t)p->state;
	hi ^= hi >> 32;
	hi *= UINT64_C(0xda942042e4dd58b5);
	hi ^= hi >> 48;
	return hi * (lo | 1);
}

/* pcg_intn is Rand.IntN(n) on a 64-bit machine: Lemire's multiply with
 * Go's rejection of the biased low products. */
static uint64_t pcg_intn(pcg *p, uint64_t n)
{
	if ((n & (n - 1)) == 0)
		return pcg_uint64(p) & (n - 1);
	unsigned __int128 m = (unsigned __int128)pcg_uint64(p) * n;
	if ((uint64_t)m < n) {
		uint64_t thresh = -n % n;
		while ((uint64_t)m < thresh)
			m = (unsigned __int128)pcg_uint64(p) * n;
	}
	return (uint64_t)(m >> 64);
}

/* sizes is churnSizes(). */
static size_t sizes[NSIZES];

static void make_sizes(void)
{
	pcg r = pcg_new(SEED, SIZES_STREAM);
	for (int i = 0; i < NSIZES; i++)
		sizes[i] = 16 + (size_t)pcg_intn(&r, 3072 - 16 + 1);
}

/* ---- the allocator ---- */

/* check_allocator makes sure that the malloc this binary calls is the
 * allocator it is named after: a linking mistake (a library dropped, or
 * another one preloaded) would otherwise measure the wrong one. */
static void check_allocator(void)
{
	const size_t n = 4096;
#if defined(ALLOC_JEMALLOC)
	uint64_t before, after;
	size_t sz = sizeof before;
	if (mallctl("thread.allocated", &before, &sz, NULL, 0))
		die("mallctl(thread.allocated) failed");
	void *p = malloc(n);
	if (mallctl("thread.allocated", &after, &sz, NULL, 0))
		die("mallctl(thread.allocated) failed");
	int ok = p && after - before >= n;
#elif defined(ALLOC_MIMALLOC)
	void *p = malloc(n);
	int ok = p && mi_is_in_heap_region(p);
#else
	size_t before = mallinfo2().uordblks;
	void *p = malloc(n);
	int ok = p && mallinfo2().uordblks - before >= n;
#endif
	if (!ok)
		die("malloc is not " ALLOCATOR "'s: check how the binary was linked (and LD_PRELOAD)");
	free(p);
}

/* alloc_block allocates n bytes (n >= 8) and writes stamp into them. */
static inline void *alloc_block(size_t n, uint64_t stamp)
{
	void *p = malloc(n);
	if (!p)
		die("malloc(%zu): %s", n, strerror(errno));
	memcpy(p, &stamp, sizeof stamp);
	return p;
}

/* alloc_aligned gets the harness's own shared structures, 64-byte aligned
 * so that two threads' parts never share a cache line. */
static void *alloc_aligned(size_t n)
{
	void *p = aligned_alloc(64, (n + 63) & ~(size_t)63);
	if (!p)
		die("aligned_alloc(%zu): %s", n, strerror(errno));
	memset(p, 0, n);
	return p;
}

/* ---- the workloads ---- */

/* A worker is one thread; ops is its share of the work (ops for churn,
 * batches for xmalloc, steps for larson). */
typedef struct {
	pthread_t tid;
	void *(*run)(void *); /* called with the worker */
	int idx;              /* the thread's (xmalloc: the pair's) index */
	uint64_t ops;
	void *arg; /* xmalloc: its pair */
} worker;

static pthread_barrier_t start_line; /* the workers and main */
static int nthreads;

static void *churn(void *arg)
{
	worker *w = arg;
	void *ring[RING] = {0};
	pthread_barrier_wait(&start_line);
	for (uint64_t i = 0; i < w->ops; i++) {
		void **slot = &ring[i & (RING - 1)];
		if (*slot)
			free(*slot);
		*slot = alloc_block(sizes[i & (NSIZES - 1)], i);
	}
	for (int i = 0; i < RING; i++)
		free(ring[i]);
	return NULL;
}

/* A pair is a producer and its consumer. Batch b travels in slots[b %
 * QUEUE]; made counts the batches handed over, freed those given back.
 * The producer waits while the queue is full, the consumer while it is
 * empty; both cannot wait at once, so one condition variable serves. The
 * lock is taken twice per batch of 256 blocks on each side. */
typedef struct {
	pthread_mutex_t mu;
	pthread_cond_t changed;
	uint64_t made, freed;
	void *slots[QUEUE][BATCH];
} __attribute__((aligned(64))) pair;

static void *producer(void *arg)
{
	worker *w = arg;
	pair *q = w->arg;
	uint64_t i = (uint64_t)w->idx * 97; /* as the Go benchmark's producers */
	pthread_barrier_wait(&start_line);
	for (uint64_t b = 0; b < w->ops; b++) {
		pthread_mutex_lock(&q->mu);
		while (q->made - q->freed == QUEUE)
			pthread_cond_wait(&q->changed, &q->mu);
		pthread_mutex_unlock(&q->mu);
		void **batch = q->slots[b % QUEUE];
		for (int j = 0; j < BATCH; j++, i++)
			batch[j] = alloc_block(sizes[i & (NSIZES - 1)], i);
		pthread_mutex_lock(&q->mu);
		q->made++;
		pthread_cond_signal(&q->changed);
		pthread_mutex_unlock(&q->mu);
	}
	return NULL;
}

static void *consumer(void *arg)
{
	worker *w = arg;
	pair *q = w->arg;
	pthread_barrier_wait(&start_line);
	for (uint64_t b = 0; b < w->ops; b++) {
		pthread_mutex_lock(&q->mu);
		while (q->made == b)
			pthread_cond_wait(&q->changed, &q->mu);
		pthread_mutex_unlock(&q->mu);
		void **batch = q->slots[b % QUEUE];
		for (int j = 0; j < BATCH; j++)
			free(batch[j]);
		pthread_mutex_lock(&q->mu);
		q->freed++;
		pthread_cond_signal(&q->changed);
		pthread_mutex_unlock(&q->mu);
	}
	return NULL;
}

typedef struct {
	void *slot[LARSON_SLOTS];
} __attribute__((aligned(64))) larson_array;

static larson_array *arrays; /* one per thread */
static pthread_barrier_t exchange;

/* larson_next draws a slot and a size from one random number: the slot
 * from its high half (multiply-shift), the size from its low bits. */
static inline void larson_next(pcg *r, int *slot, size_t *size)
{
	uint64_t x = pcg_uint64(r);
	*slot = (int)(((x >> 32) * LARSON_SLOTS) >> 32);
	*size = sizes[x & (NSIZES - 1)];
}

static void *larson(void *arg)
{
	worker *w = arg;
	pcg r = pcg_new(SEED, LARSON_STREAM + (uint64_t)w->idx);
	int k;
	size_t n;
	for (int i = 0; i < LARSON_SLOTS; i++) { /* before the clock starts */
		larson_next(&r, &k, &n);
		arrays[w->idx].slot[i] = alloc_block(n, (uint64_t)i);
	}
	pthread_barrier_wait(&start_line);
	uint64_t step = 0;
	for (int round = 0; step < w->ops; round++) {
		/* In round r, thread t works on the array thread t+r filled. */
		larson_array *a = &arrays[(w->idx + round) % nthreads];
		uint64_t end = step + LARSON_ROUND < w->ops ? step + LARSON_ROUND : w->ops;
		for (; step < end; step++) {
			larson_next(&r, &k, &n);
			free(a->slot[k]);
			a->slot[k] = alloc_block(n, step);
		}
		pthread_barrier_wait(&exchange);
	}
	return NULL;
}

/* ---- main ---- */

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: threads-%s WORKLOAD THREADS OPS\n"
		"Runs WORKLOAD (churn, xmalloc or larson) on THREADS threads (1..%d) with %s,\n"
		"OPS operations in all, and prints one JSON object.\n",
		ALLOCATOR, MAX_THREADS, ALLOCATOR);
	exit(2);
}

static uint64_t parse_count(const char *s, uint64_t max)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v == 0 || v > max)
		usage();
	return v;
}

/* share is worker i's part of total split over n workers. */
static uint64_t share(uint64_t total, int n, int i)
{
	return total / (uint64_t)n + ((uint64_t)i < total % (uint64_t)n);
}

int main(int argc, char **argv)
{
	if (argc != 4)
		usage();
	const char *workload = argv[1];
	nthreads = (int)parse_count(argv[2], MAX_THREADS);
	uint64_t ops = parse_count(argv[3], UINT64_C(1) << 40);

	check_allocator();
	make_sizes();

	worker *ws;
	int nworkers;
	if (!strcmp(workload, "churn")) {
		nworkers = nthreads;
		ws = alloc_aligned(nworkers * sizeof *ws);
		for (int i = 0; i < nworkers; i++)
			ws[i] = (worker){.run = churn, .idx = i, .ops = share(ops, nworkers, i)};
	} else if (!strcmp(workload, "xmalloc")) {
		int npairs = nthreads / 2 > 1 ? nthreads / 2 : 1;
		uint64_t batches = (ops + BATCH - 1) / BATCH;
		ops = batches * BATCH;
		nworkers = 2 * npairs;
		ws = alloc_aligned(nworkers * sizeof *ws);
		pair *pairs = alloc_aligned(npairs * sizeof *pairs);
		for (int p = 0; p < npairs; p++) {
			pthread_mutex_init(&pairs[p].mu, NULL);
			pthread_cond_init(&pairs[p].changed, NULL);
			uint64_t n = share(batches, npairs, p);
			ws[2 * p] = (worker){.run = producer, .idx = p, .ops = n, .arg = &pairs[p]};
			ws[2 * p + 1] = (worker){.run = consumer, .idx = p, .ops = n, .arg = &pairs[p]};
		}
	} else if (!strcmp(workload, "larson")) {
		nworkers = nthreads;
		ops = (ops + nthreads - 1) / nthreads * nthreads;
		ws = alloc_aligned(nworkers * sizeof *ws);
		for (int i = 0; i < nworkers; i++)
			ws[i] = (worker){.run = larson, .idx = i, .ops = ops / nthreads};
		arrays = alloc_aligned(nthreads * sizeof *arrays);
		pthread_barrier_init(&exchange, NULL, nthreads);
	} else {
		usage();
	}

	pthread_barrier_init(&start_line, NULL, nworkers + 1);
	for (int i = 0; i < nworkers; i++) {
		int err = pthread_create(&ws[i].tid, NULL, ws[i].run, &ws[i]);
		if (err)
			die("pthread_create: %s", strerror(err));
	}
	pthread_barrier_wait(&start_line);
	uint64_t t0 = now_ns();
	for (int i = 0; i < nworkers; i++)
		pthread_join(ws[i].tid, NULL);
	uint64_t dur = now_ns() - t0;

	if (arrays) /* larson's last blocks, untimed */
		for (int t = 0; t < nthreads; t++)
			for (int i = 0; i < LARSON_SLOTS; i++)
				free(arrays[t].slot[i]);

	printf("{\"allocator\":\"%s\",\"workload\":\"%s\",\"threads\":%d,\"ops\":%" PRIu64
	       ",\"ns_per_op\":%.3f,\"duration_ns\":%" PRIu64 "}\n",
	       ALLOCATOR, workload, nthreads, ops, (double)dur / (double)ops, dur);
	return 0;
}
