/*
 * capture.c: zcapture runs a PHP script in PHP 8.2's embed SAPI (Debian's
 * libphp8.2-embed) and writes the allocation trace of its Zend heap in the
 * format of docs/TRACE_FORMAT.md (read by package trace): every emalloc, efree and
 * erealloc the engine and the script made, with sizes, and a request end
 * after each request.
 *
 * How the calls are seen. With USE_ZEND_ALLOC=0 in the environment at
 * module start-up, PHP gives its heap custom handlers over libc (malloc,
 * free, realloc). zcapture sets that variable itself, and right after
 * module start-up (a wrapper around the embed SAPI's startup hook) it
 * replaces those handlers with tracing ones (zend_mm_set_custom_handlers)
 * that call the libc ones and write a record. Every entry point of the Zend
 * MM checks for custom handlers before its own code, the size-specialised
 * _emalloc_N / _efree_N that PHP code calls for sizes known at compile time
 * included (--self-test calls each entry point and checks it was seen).
 *
 * What the records hold:
 *   - sizes are the sizes asked for, except on the _emalloc_N paths, where
 *     the compiler has already rounded the constant size up to the bin N:
 *     the handler is called with N, and N is what the trace holds;
 *   - pointers become dense ids: a freed block's id is reused (last freed,
 *     first reused), and every id is free again after a request end;
 *   - a request end is written after php_request_shutdown returns. The real
 *     Zend MM drops every block still live there (zend_mm_shutdown, not
 *     full); libc does not, so zcapture frees them itself, like PHP's own
 *     USE_TRACKED_ALLOC mode, and the next request starts empty as it would;
 *   - emalloc(0) is an alloc of size 0; erealloc(NULL, n) is an alloc;
 *     erealloc(p, 0) is a realloc to size 0, and the program gets a live
 *     block back (as from the Zend MM; libc's realloc(p, 0) would free p),
 *     so the id stays live; efree(NULL) writes nothing (the Zend MM ignores
 *     it);
 *   - a block zcapture never saw allocated (one allocated during module
 *     start-up, before the handlers were in place) is freed without a
 *     record, and reallocating it writes an alloc of a new id. Both are
 *     counted in the summary (the engine makes one such block: the working
 *     directory state, freed at the first request's shutdown).
 *
 * --zend-peaks runs the same script on the real Zend MM (no custom
 * handlers, no trace) and reports memory_get_peak_usage() and
 * memory_get_peak_usage(true) of each request, read just before
 * php_request_shutdown: what the script's trace, replayed on the Zend MM
 * (bench/c/build/replay-zend), must reproduce.
 *
 * Usage: zcapture [options] SCRIPT [ARG...]   (see usage() below)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <sapi/embed/php_embed.h>
#include <zend_alloc.h>
#include <zend_stream.h>

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("zcapture: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n);
	if (!p)
		die("out of memory (%zu bytes for zcapture's own tables)", n);
	return p;
}

/* ---- the trace writer ---- */

enum { OP_ALLOC = 1, OP_FREE = 2, OP_REALLOC = 3, OP_REQUEST_END = 4 };

/* MAX_IDS is package trace's bound on ids; a program with more blocks live at
 * once cannot be traced in format version 1. */
#define MAX_IDS (UINT32_C(1) << 26)
#define MAX_SIZE (UINT64_C(1) << 48)

typedef struct {
	const char *path;
	gzFile gz;  /* a .gz path */
	FILE *f;    /* any other */
	unsigned char buf[1 << 16];
	size_t n;
	uint64_t records;
} writer_t;

static void put32(unsigned char *b, uint32_t v)
{
	b[0] = (unsigned char)v;
	b[1] = (unsigned char)(v >> 8);
	b[2] = (unsigned char)(v >> 16);
	b[3] = (unsigned char)(v >> 24);
}

static void put64(unsigned char *b, uint64_t v)
{
	put32(b, (uint32_t)v);
	put32(b + 4, (uint32_t)(v >> 32));
}

static void writer_flush(writer_t *w)
{
	if (w->n == 0)
		return;
	if (w->gz) {
		if (gzwrite(w->gz, w->buf, (unsigned)w->n) != (int)w->n) {
			int errnum;
			const char *msg = gzerror(w->gz, &errnum);
			die("%s: write: %s", w->path, errnum == Z_ERRNO ? strerror(errno) : msg);
		}
	} else if (fwrite(w->buf, 1, w->n, w->f) != w->n) {
		die("%s: write: %s", w->path, strerror(errno));
	}
	w->n = 0;
}

static void writer_put(writer_t *w, const unsigned char *b, size_t len)
{
	if (w->n + len > sizeof w->buf)
		writer_flush(w);
	memcpy(w->buf + w->n, b, len);
	w->n += len;
}

static void writer_open(writer_t *w, const char *path)
{
	size_t n = strlen(path);
	w->path = path;
	if (n > 3 && !strcmp(path + n - 3, ".gz")) {
		w->gz = gzopen(path, "wb9");
		if (!w->gz)
			die("%s: %s", path, errno ? strerror(errno) : "cannot open for gzip");
	} else {
		w->f = fopen(path, "wb");
		if (!w->f)
			die("%s: %s", path, strerror(errno));
	}
	unsigned char h[16] = "ZMMTRACE";
	put32(h + 8, 1);
	put32(h + 12, 0);
	writer_put(w, h, sizeof h);
}

static void writer_close(writer_t *w)
{
	writer_flush(w);
	if (w->gz) {
		int rc = gzclose(w->gz);
		if (rc != Z_OK)
			die("%s: closing the gzip stream failed (zlib error %d)", w->path, rc);
	} else if (fclose(w->f) != 0) {
		die("%s: close: %s", w->path, strerror(errno));
	}
}

static void writer_record(writer_t *w, uint8_t op, uint32_t id, uint64_t size)
{
	unsigned char r[16] = {op};
	put32(r + 4, id);
	put64(r + 8, size);
	writer_put(w, r, sizeof r);
	w->records++;
}

/* ---- pointers to dense ids ---- */

/* An open-addressing table from block address to id, linear probing,
 * deletion by backward shift (so there are no tombstones), at most half
 * full. Key 0 marks an empty slot: no live block is at address 0. */
typedef struct {
	uintptr_t key;
	uint32_t id;
} entry;

typedef struct {
	entry *e;
	size_t mask;  /* capacity - 1, a power of two minus one */
	size_t count;
	uint32_t *free_ids;  /* freed ids, reused last in, first out */
	size_t nfree, free_cap;
	uint32_t next_id;    /* ids below it have been handed out this request */
} idmap_t;

static size_t slot_of(const idmap_t *m, uintptr_t p)
{
	/* malloc's addresses are 16-byte aligned: the low bits carry nothing */
	return (size_t)(((uint64_t)(p >> 4) * UINT64_C(0x9E3779B97F4A7C15)) >> 20) & m->mask;
}

static void idmap_init(idmap_t *m, size_t cap)
{
	m->e = calloc(cap, sizeof *m->e);
	if (!m->e)
		die("out of memory for the id table");
	m->mask = cap - 1;
	m->count = 0;
}

static void idmap_put(idmap_t *m, uintptr_t p, uint32_t id);

static void idmap_grow(idmap_t *m)
{
	entry *old = m->e;
	size_t cap = m->mask + 1;
	idmap_init(m, cap * 2);
	for (size_t i = 0; i < cap; i++)
		if (old[i].key)
			idmap_put(m, old[i].key, old[i].id);
	free(old);
}

static void idmap_put(idmap_t *m, uintptr_t p, uint32_t id)
{
	if (2 * (m->count + 1) > m->mask + 1)
		idmap_grow(m);
	size_t i = slot_of(m, p);
	while (m->e[i].key) {
		if (m->e[i].key == p)
			die("the allocator returned the live block %p again", (void *)p);
		i = (i + 1) & m->mask;
	}
	m->e[i].key = p;
	m->e[i].id = id;
	m->count++;
}

/* idmap_take removes p and returns its id, or false if p is not there. */
static bool idmap_take(idmap_t *m, uintptr_t p, uint32_t *id)
{
	size_t i = slot_of(m, p);
	for (;;) {
		if (!m->e[i].key)
			return false;
		if (m->e[i].key == p)
			break;
		i = (i + 1) & m->mask;
	}
	*id = m->e[i].id;
	m->count--;
	/* Backward shift: move later entries of the probe run into the hole
	 * when their home slot does not lie strictly between hole and them. */
	size_t hole = i;
	for (size_t j = (i + 1) & m->mask; m->e[j].key; j = (j + 1) & m->mask) {
		size_t home = slot_of(m, m->e[j].key);
		bool movable = hole <= j ? (home <= hole || home > j) : (home <= hole && home > j);
		if (movable) {
			m->e[hole] = m->e[j];
			hole = j;
		}
	}
	m->e[hole].key = 0;
	return true;
}

static uint32_t new_id(idmap_t *m)
{
	if (m->nfree)
		return m->free_ids[--m->nfree];
	if (m->next_id >= MAX_IDS)
		die("more than %" PRIu32 " blocks live at once: the trace format cannot hold this program", MAX_IDS);
	return m->next_id++;
}

static void release_id(idmap_t *m, uint32_t id)
{
	if (m->nfree == m->free_cap) {
		m->free_cap = m->free_cap ? 2 * m->free_cap : 4096;
		m->free_ids = realloc(m->free_ids, m->free_cap * sizeof *m->free_ids);
		if (!m->free_ids)
			die("out of memory for the id table");
	}
	m->free_ids[m->nfree++] = id;
}

/* ---- the tracing handlers ---- */

typedef void *(*malloc_fn)(size_t ZEND_FILE_LINE_DC ZEND_FILE_LINE_ORIG_DC);
typedef void (*free_fn)(void *ZEND_FILE_LINE_DC ZEND_FILE_LINE_ORIG_DC);
typedef void *(*realloc_fn)(void *, size_t ZEND_FILE_LINE_DC ZEND_FILE_LINE_ORIG_DC);

/* The handlers USE_ZEND_ALLOC=0 installed: libc's, with PHP's
 * out-of-memory check. */
static malloc_fn orig_malloc;
static free_fn orig_free;
static realloc_fn orig_realloc;

typedef struct {
	uint64_t allocs, frees, reallocs, request_ends;
	uint64_t null_frees;         /* efree(NULL): no record */
	uint64_t null_reallocs;      /* erealloc(NULL, n): an alloc */
	uint64_t zero_reallocs;      /* erealloc(p, 0): a realloc to 0 */
	uint64_t untracked_frees;    /* blocks from before the handlers */
	uint64_t untracked_reallocs; /* the same, reallocated: an alloc */
	uint64_t dropped;            /* blocks live at a request end */
	uint64_t bytes;              /* sizes of allocs and reallocs, summed */
	size_t live, max_live;
	uint64_t live_bytes, peak_live_bytes; /* requested bytes */
} stats_t;

static writer_t *out;   /* NULL: count only (--self-test) */
static idmap_t ids;
static stats_t st;
static bool tracing;
/* The sizes of the live blocks, per id, for the live-bytes figures. */
static uint64_t *id_size;
static size_t id_size_cap;

static void set_size(uint32_t id, uint64_t size)
{
	if (id >= id_size_cap) {
		size_t cap = id_size_cap ? id_size_cap : 4096;
		while (cap <= id)
			cap *= 2;
		id_size = realloc(id_size, cap * sizeof *id_size);
		if (!id_size)
			die("out of memory for the id table");
		memset(id_size + id_size_cap, 0, (cap - id_size_cap) * sizeof *id_size);
		id_size_cap = cap;
	}
	st.live_bytes += size - id_size[id];
	id_size[id] = size;
	if (st.live_bytes > st.peak_live_bytes)
		st.peak_live_bytes = st.live_bytes;
}

static void emit(uint8_t op, uint32_t id, uint64_t size)
{
	if (size > MAX_SIZE)
		die("a block of %" PRIu64 " bytes is above the format's 2^48", size);
	if (out)
		writer_record(out, op, id, size);
}

static void note_alloc(void *p, size_t size)
{
	uint32_t id = new_id(&ids);
	idmap_put(&ids, (uintptr_t)p, id);
	emit(OP_ALLOC, id, size);
	st.allocs++;
	st.bytes += size;
	if (++st.live > st.max_live)
		st.max_live = st.live;
	set_size(id, size);
}

static void *t_malloc(size_t size ZEND_FILE_LINE_DC ZEND_FILE_LINE_ORIG_DC)
{
	void *p = orig_malloc(size ZEND_FILE_LINE_RELAY_CC ZEND_FILE_LINE_ORIG_RELAY_CC);
	if (tracing)
		note_alloc(p, size);
	return p;
}

static void t_free(void *p ZEND_FILE_LINE_DC ZEND_FILE_LINE_ORIG_DC)
{
	if (tracing) {
		uint32_t id;
		if (!p) {
			st.null_frees++;
			return;
		}
		if (idmap_take(&ids, (uintptr_t)p, &id)) {
			emit(OP_FREE, id, 0);
			st.frees++;
			st.live--;
			set_size(id, 0);
			release_id(&ids, id);
		} else {
			st.untracked_frees++;
		}
	}
	orig_free(p ZEND_FILE_LINE_RELAY_CC ZEND_FILE_LINE_ORIG_RELAY_CC);
}

static void *t_realloc(void *p, size_t size ZEND_FILE_LINE_DC ZEND_FILE_LINE_ORIG_DC)
{
	if (!tracing)
		return orig_realloc(p, size ZEND_FILE_LINE_RELAY_CC ZEND_FILE_LINE_ORIG_RELAY_CC);
	if (!p) {
		st.null_reallocs++;
		return t_malloc(size ZEND_FILE_LINE_RELAY_CC ZEND_FILE_LINE_ORIG_RELAY_CC);
	}
	/* libc's realloc(p, 0) frees p; the Zend MM's returns a block. */
	if (size == 0)
		st.zero_reallocs++;
	void *q = orig_realloc(p, size ? size : 1 ZEND_FILE_LINE_RELAY_CC ZEND_FILE_LINE_ORIG_RELAY_CC);
	uint32_t id;
	if (idmap_take(&ids, (uintptr_t)p, &id)) {
		idmap_put(&ids, (uintptr_t)q, id);
		emit(OP_REALLOC, id, size);
		st.reallocs++;
		st.bytes += size;
		set_size(id, size);
	} else {
		st.untracked_reallocs++;
		note_alloc(q, size);
	}
	return q;
}

/* request_end writes the record and does what the Zend MM's reset would:
 * every block still live is gone, and every id is free again. */
static void request_end(void)
{
	for (size_t i = 0; i <= ids.mask; i++) {
		if (ids.e[i].key) {
			orig_free((void *)ids.e[i].key ZEND_FILE_LINE_CC ZEND_FILE_LINE_EMPTY_CC);
			ids.e[i].key = 0;
			st.dropped++;
		}
	}
	ids.count = 0;
	ids.nfree = 0;
	memset(id_size, 0, ids.next_id * sizeof *id_size);
	ids.next_id = 0;
	st.live = 0;
	st.live_bytes = 0;
	emit(OP_REQUEST_END, 0, 0);
	st.request_ends++;
}

/* ---- start-up ---- */

static int (*embed_startup)(struct _sapi_module_struct *);
static char *ini_entries; /* the embed SAPI's, then zcapture's defaults, then -d */
static bool zend_peaks;

/* capture_startup wraps the embed SAPI's startup hook: the INI entries go
 * in before module start-up reads them, the handlers right after it, before
 * the first request. */
static int capture_startup(struct _sapi_module_struct *sf)
{
	if (sf->ini_entries) {
		/* the embed SAPI's own (register_argc_argv=1 and the like) first */
		size_t a = strlen(sf->ini_entries), b = strlen(ini_entries);
		char *all = xmalloc(a + b + 1);
		memcpy(all, sf->ini_entries, a);
		memcpy(all + a, ini_entries, b + 1);
		free(ini_entries);
		ini_entries = all;
	}
	sf->ini_entries = ini_entries;
	if (embed_startup(sf) == FAILURE)
		return FAILURE;
	if (zend_peaks)
		return SUCCESS;
	/* The heap is made; the script's environment ($_SERVER, getenv) must
	 * be the one it has without zcapture. */
	unsetenv("USE_ZEND_ALLOC");
	zend_mm_heap *heap = zend_mm_get_heap();
	if (!zend_mm_is_custom_heap(heap))
		die("the Zend heap has no custom handlers after start-up: USE_ZEND_ALLOC=0 was not honoured");
	zend_mm_get_custom_handlers(heap, &orig_malloc, &orig_free, &orig_realloc);
	if (!orig_malloc || !orig_free || !orig_realloc)
		die("the Zend heap's custom handlers are incomplete");
	zend_mm_set_custom_handlers(heap, t_malloc, t_free, t_realloc);
	tracing = true;
	return SUCCESS;
}

static void add_ini(const char *entry)
{
	size_t a = ini_entries ? strlen(ini_entries) : 0, b = strlen(entry);
	char *s = xmalloc(a + b + 2);
	if (a)
		memcpy(s, ini_entries, a);
	memcpy(s + a, entry, b);
	s[a + b] = '\n';
	s[a + b + 1] = 0;
	free(ini_entries);
	ini_entries = s;
}

/* ---- --self-test: every entry point of the Zend MM reaches the handlers ---- */

typedef void *(*bin_alloc_fn)(void);
typedef void (*bin_free_fn)(void *);

#define BIN(n) {n, _emalloc_##n, _efree_##n}
static const struct {
	size_t size;
	bin_alloc_fn alloc;
	bin_free_fn free;
} bins[] = {
	BIN(8), BIN(16), BIN(24), BIN(32), BIN(40), BIN(48), BIN(56), BIN(64),
	BIN(80), BIN(96), BIN(112), BIN(128), BIN(160), BIN(192), BIN(224), BIN(256),
	BIN(320), BIN(384), BIN(448), BIN(512), BIN(640), BIN(768), BIN(896), BIN(1024),
	BIN(1280), BIN(1536), BIN(1792), BIN(2048), BIN(2560), BIN(3072),
};

static int self_test_failures;

static void expect(bool ok, const char *what, uint64_t got, uint64_t want)
{
	if (!ok) {
		fprintf(stderr, "zcapture: self-test: %s: got %" PRIu64 ", want %" PRIu64 "\n", what, got, want);
		self_test_failures++;
	}
}

/* self_test calls each entry point once and checks that the handlers saw
 * the call, with the size the compiled call passes. */
static int self_test(void)
{
	stats_t s0 = st;
	for (size_t i = 0; i < sizeof bins / sizeof bins[0]; i++) {
		uint64_t a = st.allocs, f = st.frees, lb = st.live_bytes;
		void *p = bins[i].alloc();
		char what[64];
		snprintf(what, sizeof what, "_emalloc_%zu: live bytes", bins[i].size);
		expect(st.allocs == a + 1 && st.live_bytes == lb + bins[i].size, what, st.live_bytes - lb, bins[i].size);
		bins[i].free(p);
		snprintf(what, sizeof what, "_efree_%zu: frees", bins[i].size);
		expect(st.frees == f + 1, what, st.frees - f, 1);
	}
	struct {
		const char *name;
		size_t size;
	} big[] = {{"_emalloc_large / _efree_large", 20000}, {"_emalloc_huge / _efree_huge", 3u << 20}};
	for (int i = 0; i < 2; i++) {
		uint64_t lb = st.live_bytes, f = st.frees;
		void *p = i == 0 ? _emalloc_large(big[i].size) : _emalloc_huge(big[i].size);
		expect(st.live_bytes == lb + big[i].size, big[i].name, st.live_bytes - lb, big[i].size);
		if (i == 0)
			_efree_large(p, big[i].size);
		else
			_efree_huge(p, big[i].size);
		expect(st.frees == f + 1, big[i].name, st.frees - f, 1);
	}
	/* zend_alloc.h turns _emalloc of a size known at compile time into
	 * _emalloc_N of its bin: 100 becomes 112. A size known at run time
	 * reaches the handler as it is. */
	uint64_t lb = st.live_bytes;
	void *p = _emalloc(100);
	expect(st.live_bytes == lb + 112, "_emalloc(100), a constant: _emalloc_112", st.live_bytes - lb, 112);
	_efree(p);
	volatile size_t hundred = 100;
	p = _emalloc(hundred);
	expect(st.live_bytes == lb + 100, "_emalloc(100), a variable", st.live_bytes - lb, 100);
	p = _erealloc(p, 5000);
	expect(st.live_bytes == lb + 5000 && st.reallocs == s0.reallocs + 1, "_erealloc(p, 5000)", st.live_bytes - lb, 5000);
	p = _erealloc2(p, 9000, 5000);
	expect(st.live_bytes == lb + 9000, "_erealloc2(p, 9000)", st.live_bytes - lb, 9000);
	p = _safe_erealloc(p, 3, 1000, 7);
	expect(st.live_bytes == lb + 3007, "_safe_erealloc(p, 3, 1000, 7)", st.live_bytes - lb, 3007);
	_efree(p);
	void *q = _safe_emalloc(10, 12, 4);
	expect(st.live_bytes == lb + 124, "_safe_emalloc(10, 12, 4)", st.live_bytes - lb, 124);
	_efree(q);
	q = _ecalloc(7, 9);
	expect(st.live_bytes == lb + 63, "_ecalloc(7, 9)", st.live_bytes - lb, 63);
	_efree(q);
	q = _estrdup("zcapture");
	expect(st.live_bytes == lb + 9, "_estrdup(\"zcapture\")", st.live_bytes - lb, 9);
	_efree(q);
	q = _estrndup("zcapture", 3);
	expect(st.live_bytes == lb + 4, "_estrndup(\"zcapture\", 3)", st.live_bytes - lb, 4);
	_efree(q);
	/* A PHP string: zend_string_alloc asks for its header and the bytes,
	 * rounded up to 8. */
	zend_string *zs = zend_string_init("abcdefghij", hundred / 10, 0);
	expect(st.live_bytes == lb + ZEND_MM_ALIGNED_SIZE(_ZSTR_STRUCT_SIZE(10)), "zend_string_init of 10 bytes", st.live_bytes - lb,
	       ZEND_MM_ALIGNED_SIZE(_ZSTR_STRUCT_SIZE(10)));
	zend_string_release(zs);
	_efree(NULL);
	expect(st.null_frees == s0.null_frees + 1, "_efree(NULL): counted, not written", st.null_frees - s0.null_frees, 1);
	q = _erealloc(NULL, 40);
	expect(st.null_reallocs == s0.null_reallocs + 1 && st.live_bytes == lb + 40, "_erealloc(NULL, 40): an alloc",
	       st.live_bytes - lb, 40);
	q = _erealloc(q, 0);
	expect(q != NULL && st.zero_reallocs == s0.zero_reallocs + 1 && st.live_bytes == lb, "_erealloc(q, 0): a live block",
	       st.live_bytes - lb, 0);
	_efree(q);
	expect(st.live == s0.live && st.live_bytes == s0.live_bytes, "live bytes after the self-test", st.live_bytes,
	       s0.live_bytes);
	if (self_test_failures == 0)
		fprintf(stderr, "zcapture: self-test: every entry point reached the tracing handlers with its size\n");
	return self_test_failures ? 1 : 0;
}

/* ---- running the script ---- */

/* The corpus runs command-line programs, and they look at what the CLI SAPI
 * gives them (Composer, for one, warns under another SAPI and reads
 * $_SERVER['PHP_SELF']). So zcapture presents itself as the CLI: PHP_SAPI is
 * "cli", $_SERVER has the CLI's script entries, STDIN, STDOUT and STDERR
 * are defined, and the script's "#!" line is skipped. */
static const char *script_path;

static void capture_register_variables(zval *track_vars_array)
{
	php_import_environment_variables(track_vars_array);
	php_register_variable("PHP_SELF", script_path, track_vars_array);
	php_register_variable("SCRIPT_NAME", script_path, track_vars_array);
	php_register_variable("SCRIPT_FILENAME", script_path, track_vars_array);
	php_register_variable("PATH_TRANSLATED", script_path, track_vars_array);
	php_register_variable("DOCUMENT_ROOT", "", track_vars_array);
}

/* register_std_handles defines STDIN, STDOUT and STDERR, as the CLI SAPI
 * does at each request: streams on file descriptors 0, 1 and 2 that a
 * request's end must not close (PHP_STREAM_FLAG_NO_CLOSE). Without that
 * flag the first request's shutdown would close the process's standard
 * output, and the later requests would write into nothing. */
static void register_std_handles(void)
{
	static const struct {
		const char *name, *url, *mode;
	} std[] = {{"STDIN", "php://stdin", "rb"}, {"STDOUT", "php://stdout", "wb"}, {"STDERR", "php://stderr", "wb"}};
	for (size_t i = 0; i < sizeof std / sizeof std[0]; i++) {
		php_stream *s = php_stream_open_wrapper_ex(std[i].url, std[i].mode, 0, NULL, NULL);
		if (!s)
			die("cannot open %s", std[i].url);
		s->flags |= PHP_STREAM_FLAG_NO_CLOSE;
		zend_constant c;
		php_stream_to_zval(s, &c.value);
		ZEND_CONSTANT_SET_FLAGS(&c, CONST_CS, 0);
		c.name = zend_string_init_interned(std[i].name, strlen(std[i].name), 0);
		if (zend_register_constant(&c) == FAILURE)
			die("cannot define %s", std[i].name);
	}
}

/* run_script runs the script in the current request and returns its exit
 * status (exit(N), or 255 after a fatal error). */
static int run_script(const char *script)
{
	int status = 0;
	zend_first_try {
		register_std_handles();
		/* the CLI skips a script's "#!" line; so must we (it is reset at
		 * every request start) */
		CG(skip_shebang) = true;
		zend_file_handle fh;
		zend_stream_init_filename(&fh, script);
		php_execute_script(&fh);
		zend_destroy_file_handle(&fh);
		status = EG(exit_status);
	} zend_catch {
		status = EG(exit_status) ? EG(exit_status) : 255;
	} zend_end_try();
	return status;
}

static void usage(void)
{
	fputs("usage: zcapture [-r N] [-o OUT.ztrace.gz] [-d NAME=VALUE]... [-s SUMMARY.json] [--zend-peaks] SCRIPT [ARG...]\n"
	      "       zcapture --self-test\n"
	      "Runs the PHP script SCRIPT with arguments ARG in PHP's embed SAPI, as N requests (default 1),\n"
	      "and writes the allocation trace of its Zend heap to OUT (gzip when it ends in .gz).\n"
	      "  -d NAME=VALUE  an INI setting, after zcapture's defaults (memory_limit=-1, opcache.enable=0)\n"
	      "  -s FILE        write a JSON summary (counts, exit statuses, peaks) to FILE\n"
	      "  --zend-peaks   no trace: run on the real Zend MM and report each request's memory_get_peak_usage()\n"
	      "  --self-test    check that every emalloc/efree/erealloc entry point reaches the handlers\n",
	      stderr);
	exit(2);
}

int main(int argc, char **argv)
{
	const char *out_path = NULL, *summary_path = NULL;
	long requests = 1;
	bool do_self_test = false;
	int i = 1;
	add_ini("memory_limit=-1");
	add_ini("opcache.enable=0");
	for (; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-r") && i + 1 < argc) {
			char *end;
			requests = strtol(argv[++i], &end, 10);
			if (*end || requests < 1 || requests > 1000000)
				die("-r wants a request count from 1, not %s", argv[i]);
		} else if (!strcmp(a, "-o") && i + 1 < argc) {
			out_path = argv[++i];
		} else if (!strcmp(a, "-s") && i + 1 < argc) {
			summary_path = argv[++i];
		} else if (!strcmp(a, "-d") && i + 1 < argc) {
			if (!strchr(argv[++i], '='))
				die("-d wants NAME=VALUE, not %s", argv[i]);
			add_ini(argv[i]);
		} else if (!strcmp(a, "--zend-peaks")) {
			zend_peaks = true;
		} else if (!strcmp(a, "--self-test")) {
			do_self_test = true;
		} else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage();
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "zcapture: unknown or incomplete flag %s\n", a);
			usage();
		} else {
			break;
		}
	}
	const char *script = i < argc ? argv[i] : NULL;
	if (!do_self_test && !script)
		usage();
	if (!do_self_test && !zend_peaks && !out_path)
		die("-o OUT is required (or --zend-peaks)");
	if (do_self_test && (script || out_path || zend_peaks))
		die("--self-test takes no script, -o or --zend-peaks");

	/* The heap is made at module start-up: the variable must be set (or
	 * cleared, for --zend-peaks) before. */
	if (zend_peaks)
		unsetenv("USE_ZEND_ALLOC");
	else if (setenv("USE_ZEND_ALLOC", "0", 1) != 0)
		die("setenv: %s", strerror(errno));

	writer_t w;
	memset(&w, 0, sizeof w);
	if (out_path) {
		writer_open(&w, out_path);
		out = &w;
	}
	idmap_init(&ids, 1 << 16);

	embed_startup = php_embed_module.startup;
	php_embed_module.startup = capture_startup;
	php_embed_module.name = "cli";
	php_embed_module.register_server_variables = capture_register_variables;
	script_path = script ? script : "";
	/* PHP's $argv: the script and its arguments */
	int php_argc = do_self_test ? 1 : argc - i;
	char **php_argv = do_self_test ? (char *[]){argv[0], NULL} : argv + i;
	if (php_embed_init(php_argc, php_argv) == FAILURE)
		die("php_embed_init failed");

	if (do_self_test) {
		int rc = self_test();
		php_request_shutdown(NULL);
		return rc;
	}

	int *status = xmalloc((size_t)requests * sizeof *status);
	size_t *peak = xmalloc((size_t)requests * sizeof *peak), *real_peak = xmalloc((size_t)requests * sizeof *real_peak);
	for (long r = 0; r < requests; r++) {
		if (r > 0) {
			SG(request_info).argc = php_argc;
			SG(request_info).argv = php_argv;
			if (php_request_startup() == FAILURE)
				die("php_request_startup failed (request %ld)", r + 1);
			SG(headers_sent) = 1;
			SG(request_info).no_headers = 1;
		}
		status[r] = run_script(script);
		peak[r] = zend_memory_peak_usage(false);
		real_peak[r] = zend_memory_peak_usage(true);
		php_request_shutdown(NULL);
		if (tracing)
			request_end();
	}
	/* No more records: module shut-down frees what module start-up made,
	 * through the original handlers. */
	if (tracing) {
		zend_mm_set_custom_handlers(zend_mm_get_heap(), orig_malloc, orig_free, orig_realloc);
		tracing = false;
	}
	if (out)
		writer_close(out);
	fflush(stdout);

	fprintf(stderr, "zcapture: %s: %ld request(s), exit status", script, requests);
	for (long r = 0; r < requests && r < 8; r++)
		fprintf(stderr, " %d", status[r]);
	fprintf(stderr, requests > 8 ? " ...\n" : "\n");
	if (out)
		fprintf(stderr,
			"zcapture: %s: %" PRIu64 " records: %" PRIu64 " allocs, %" PRIu64 " frees, %" PRIu64 " reallocs, %" PRIu64
			" request ends; at most %zu live, %" PRIu64 " bytes; %" PRIu64 " dropped at request ends; "
			"%" PRIu64 " frees and %" PRIu64 " reallocs of blocks from before the capture\n",
			out_path, out->records, st.allocs, st.frees, st.reallocs, st.request_ends, st.max_live, st.peak_live_bytes,
			st.dropped, st.untracked_frees, st.untracked_reallocs);
	if (summary_path) {
		FILE *f = fopen(summary_path, "w");
		if (!f)
			die("%s: %s", summary_path, strerror(errno));
		fprintf(f, "{\"script\":\"%s\",\"mode\":\"%s\",\"requests\":%ld,\"exit_status\":[", script,
			zend_peaks ? "zend-peaks" : "trace", requests);
		for (long r = 0; r < requests; r++)
			fprintf(f, "%s%d", r ? "," : "", status[r]);
		fprintf(f, "]");
		if (zend_peaks) {
			fprintf(f, ",\"peak_usage\":[");
			for (long r = 0; r < requests; r++)
				fprintf(f, "%s%zu", r ? "," : "", peak[r]);
			fprintf(f, "],\"real_peak_usage\":[");
			for (long r = 0; r < requests; r++)
				fprintf(f, "%s%zu", r ? "," : "", real_peak[r]);
			fprintf(f, "]");
		} else {
			fprintf(f,
				",\"records\":%" PRIu64 ",\"allocs\":%" PRIu64 ",\"frees\":%" PRIu64 ",\"reallocs\":%" PRIu64
				",\"request_ends\":%" PRIu64 ",\"max_live\":%zu,\"peak_live_bytes\":%" PRIu64 ",\"bytes\":%" PRIu64
				",\"dropped\":%" PRIu64 ",\"null_frees\":%" PRIu64 ",\"null_reallocs\":%" PRIu64
				",\"zero_reallocs\":%" PRIu64 ",\"untracked_frees\":%" PRIu64 ",\"untracked_reallocs\":%" PRIu64,
				out->records, st.allocs, st.frees, st.reallocs, st.request_ends, st.max_live, st.peak_live_bytes,
				st.bytes, st.dropped, st.null_frees, st.null_reallocs, st.zero_reallocs, st.untracked_frees,
				st.untracked_reallocs);
		}
		fprintf(f, "}\n");
		if (fclose(f) != 0)
			die("%s: %s", summary_path, strerror(errno));
	}
	php_module_shutdown();
	sapi_shutdown();
	return 0;
}
