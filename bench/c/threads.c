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
 * five on zmm's Shared. OPS counts over all threads, and ns/op is wall
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
 *   cache-scratch
 *            false sharing handed over (after Hoard's cache-scratch): the
 *            main thread allocates one 8-byte block per thread, one after
 *            the other, before the clock starts, and hands thread t block
 *            t; each thread frees the block it was given, then repeats, its
 *            share of OPS times: allocate an 8-byte block, increment each of
 *            its 8 bytes SCRATCH_WRITES (32) times over (volatile byte loads
 *            and stores), free it. An allocator that gives a thread back the
 *            block it freed, on one cache line with the other threads'
 *            (Hoard's passive false sharing), shows it as poor scaling
 *            (BenchmarkSharedCacheScratch); op = one alloc + writes + free
 *   mstress  threads come and go while their blocks outlive them (after
 *            mimalloc-bench's mstress), in rounds: each round starts THREADS
 *            fresh threads and joins them. A thread makes MSTRESS_BATCH
 *            (1000) steps; step i allocates a block into slot i of its
 *            local array, then with chance 1/2 frees the block of a random
 *            slot 0..i (if it holds one), and with chance 1/4 moves the
 *            block of a random slot 0..i (if it holds one) into a random
 *            slot of the transfer array (1000 slots shared by all threads,
 *            an atomic exchange) and frees the block that was there (if
 *            any), one left by a thread of this round or an earlier one. At
 *            its end the thread frees what is left in its local array. The
 *            transfer array starts empty; its last blocks are freed after
 *            the clock (BenchmarkSharedMstress); op = one step (one block
 *            allocated). OPS is rounded up to whole rounds, of THREADS x
 *            1000 steps
 *
 * Every block gets its first 8 bytes written, so that each is touched.
 * Only the workload is timed (CLOCK_MONOTONIC): from the moment all threads
 * are started and waiting at the start line to the last one's exit (for
 * mstress: from the first round's start to the last one's end, the
 * creation and exit of the threads included).
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
	SCRATCH_SIZE = 8,       /* cache-scratch: block size */
	SCRATCH_WRITES = 32,    /* cache-scratch: increments of each byte per op */
	MSTRESS_BATCH = 1000,   /* mstress: steps (blocks allocated) of a thread */
	TRANSFERS = 1000,       /* mstress: slots of the transfer array */
	MAX_THREADS = 1024,
};

/* The seeds of bench/shared_test.go: bench's seed ("zmm") and churnSizes'
 * stream; the larson threads use streams LARSON_STREAM + thread, the
 * mstress ones MSTRESS_STREAM + round * THREADS + thread. */
#define SEED UINT64_C(0x5a6d6d)
#define SIZES_STREAM 18
#define LARSON_STREAM 1000
#define MSTRESS_STREAM 2000

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

/* A worker is one thread; ops is its share of the work (ops for churn and
 * cache-scratch, batches for xmalloc, steps for larson, the round for
 * mstress). */
typedef struct {
	pthread_t tid;
	void *(*run)(void *); /* called with the worker */
	int idx;              /* the thread's (xmalloc: the pair's) index */
	uint64_t ops;
	void *arg; /* xmalloc: its pair; cache-scratch: the block it is given */
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

static void *cache_scratch(void *arg)
{
	worker *w = arg;
	pthread_barrier_wait(&start_line);
	free(w->arg); /* the main thread's block, next to the others' */
	for (uint64_t i = 0; i < w->ops; i++) {
		volatile unsigned char *b = alloc_block(SCRATCH_SIZE, i);
		for (int r = 0; r < SCRATCH_WRITES; r++)
			for (int k = 0; k < SCRATCH_SIZE; k++)
				b[k]++;
		free((void *)b);
	}
	return NULL;
}

static void *transfer[TRANSFERS]; /* mstress: shared by all threads */

/* pick is a random index in 0..n-1 from 32 random bits (multiply-shift). */
static inline uint64_t pick(uint64_t bits32, uint64_t n)
{
	return (bits32 * n) >> 32;
}

/* mstress is one thread of one round (w->ops). Each step draws one random
 * number x: the size from its low 10 bits, the chances from bits 10 (the
 * free) and 11-12 (the swap), the slot to free from its high half; a swap
 * draws one more, y: the local slot from its high half, the transfer slot
 * from its low one. */
static void *mstress(void *arg)
{
	worker *w = arg;
	pcg r = pcg_new(SEED, MSTRESS_STREAM + w->ops * (uint64_t)nthreads + (uint64_t)w->idx);
	void *data[MSTRESS_BATCH];
	for (uint64_t i = 0; i < MSTRESS_BATCH; i++) {
		uint64_t x = pcg_uint64(&r);
		data[i] = alloc_block(sizes[x & (NSIZES - 1)], i);
		if (x >> 10 & 1) { /* chance 1/2: free a local block */
			uint64_t j = pick(x >> 32, i + 1);
			if (data[j]) {
				free(data[j]);
				data[j] = NULL;
			}
		}
		if ((x >> 11 & 3) == 0) { /* chance 1/4: swap one into the transfer array */
			uint64_t y = pcg_uint64(&r);
			uint64_t j = pick(y >> 32, i + 1);
			if (data[j]) {
				void *q = __atomic_exchange_n(&transfer[pick(y & UINT32_MAX, TRANSFERS)], data[j],
							      __ATOMIC_ACQ_REL);
				data[j] = NULL;
				if (q)
					free(q);
			}
		}
	}
	for (int i = 0; i < MSTRESS_BATCH; i++)
		if (data[i])
			free(data[i]);
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
		"Runs WORKLOAD (churn, xmalloc, larson, cache-scratch or mstress) on THREADS\n"
		"threads (1..%d) with %s,\n"
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
	} else if (!strcmp(workload, "cache-scratch")) {
		/* The blocks first, one after the other: the harness's own
		 * structures would leave holes between them. */
		static void *given[MAX_THREADS];
		for (int i = 0; i < nthreads; i++)
			given[i] = alloc_block(SCRATCH_SIZE, (uint64_t)i);
		nworkers = nthreads;
		ws = alloc_aligned(nworkers * sizeof *ws);
		for (int i = 0; i < nworkers; i++)
			ws[i] = (worker){.run = cache_scratch, .idx = i, .ops = share(ops, nworkers, i),
					 .arg = given[i]};
	} else if (!strcmp(workload, "mstress")) {
		nworkers = 0; /* started round by round below */
		ws = alloc_aligned(nthreads * sizeof *ws);
	} else {
		usage();
	}

	uint64_t t0, dur;
	if (nworkers > 0) {
		pthread_barrier_init(&start_line, NULL, nworkers + 1);
		for (int i = 0; i < nworkers; i++) {
			int err = pthread_create(&ws[i].tid, NULL, ws[i].run, &ws[i]);
			if (err)
				die("pthread_create: %s", strerror(err));
		}
		pthread_barrier_wait(&start_line);
		t0 = now_ns();
		for (int i = 0; i < nworkers; i++)
			pthread_join(ws[i].tid, NULL);
		dur = now_ns() - t0;
	} else { /* mstress */
		uint64_t per_round = (uint64_t)nthreads * MSTRESS_BATCH;
		uint64_t rounds = (ops + per_round - 1) / per_round;
		ops = rounds * per_round;
		t0 = now_ns();
		for (uint64_t round = 0; round < rounds; round++) {
			for (int i = 0; i < nthreads; i++) {
				ws[i] = (worker){.run = mstress, .idx = i, .ops = round};
				int err = pthread_create(&ws[i].tid, NULL, mstress, &ws[i]);
				if (err)
					die("pthread_create: %s", strerror(err));
			}
			for (int i = 0; i < nthreads; i++)
				pthread_join(ws[i].tid, NULL);
		}
		dur = now_ns() - t0;
	}

	if (arrays) /* larson's last blocks, untimed */
		for (int t = 0; t < nthreads; t++)
			for (int i = 0; i < LARSON_SLOTS; i++)
				free(arrays[t].slot[i]);
	for (int i = 0; i < TRANSFERS; i++) /* mstress's, untimed */
		free(transfer[i]);

	printf("{\"allocator\":\"%s\",\"workload\":\"%s\",\"threads\":%d,\"ops\":%" PRIu64
	       ",\"ns_per_op\":%.3f,\"duration_ns\":%" PRIu64 "}\n",
	       ALLOCATOR, workload, nthreads, ops, (double)dur / (double)ops, dur);
	return 0;
}
