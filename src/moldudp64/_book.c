/*
 * Optional C twin of moldudp64.itch50.book.PyBookCore: the order book ITCH 5.0 messages
 * build, with the same rows byte for byte (the tests compare them). The package works
 * without it (pure-Python fallback).
 *
 * Orders live in a pool (free list) found by reference through a direct table of pages
 * (references are dense and rise) and an open-addressing hash table for the rest (linear
 * probing, backward-shift deletion; grows at half full, shrinks at 1/8): "order index";
 * each price level holds its orders as a doubly-linked list in time priority; each side of
 * a stock is an array of levels sorted so that the best is last (price ascending for bids,
 * descending for asks): inserts and removals near the top move few entries.
 *
 * (Longer than most files on purpose: the hash, the pools, the levels, the rows, the
 * queries and the Python type are one translation unit so the hot path inlines.)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) && defined(__SSE2__)
#include <emmintrin.h>
#endif

#define NO_CHANGE (1 << 30)
#define SEEN(c) ((uint16_t)(0x100 | (c))) /* a state code byte that arrived (NUL too) */
#define BBO_WIDTH 10
#define TRADES_WIDTH 11

/* 32 bytes, and the pool 64-aligned: an order never spans two cache lines (ITCH shares
 * are 32-bit) */
typedef struct {
    uint64_t ref;
    uint32_t shares;
    uint32_t price;
    int32_t level;
    int32_t prev, next;
    uint16_t locate;
    uint8_t side;
} Order;

typedef struct {
    uint32_t price;
    uint32_t count;
    uint64_t shares;
    int32_t head, tail;
} Level;

typedef struct {
    uint32_t *keys; /* sorted ascending, best last: the price for bids, ~price for asks */
    int32_t *lv;    /* the level of each key */
    int32_t n, cap;
} Side;

typedef struct {
    int32_t code;
    uint8_t emit;
    /* last_bbo, last_depth may be behind the book (changes while not emitted) */
    uint8_t stale_bbo, stale_depth;
    Side sides[2];
    int64_t last_bbo[6];
    int64_t *last_depth;
    /* state (has_*: seen; a code is SEEN(byte): 0 only when never seen, NUL included) */
    uint16_t trading_state, reg_sho, market_code, halt_action, market_category, ipo_qualifier;
    uint8_t has_reason, has_luld, has_ipo, has_round_lot;
    char reason[4];
    uint32_t luld[4];
    uint32_t ipo_time, ipo_price, round_lot;
} Stock;

typedef struct {
    uint64_t key;
    int64_t val; /* -1: empty */
} Slot;

/* a page of the direct order table: the order index of each of PAGE consecutive
 * references (-1: none here), NULL when none is; hashed: some of its references may be in
 * the hash (then a miss here looks there) */
typedef struct {
    int32_t *slot;
    int32_t live;
    int32_t hashed;
} OrderPage;

/* a table's rows column after column: column c at d[c * stride, c * stride + n) (the
 * Parquet side takes them as columns: no transpose); stride is cap and a cache line, so the
 * columns written side by side do not fall in the same cache set */
typedef struct {
    int64_t *d;
    Py_ssize_t n, cap, stride, width; /* rows held, rows of room, ..., values per row */
    /* the last sn of the n rows, row after row (written to the columns STAGE at a time:
     * a row written straight into its columns touches width cache lines and pages apart) */
    int64_t *stage;
    Py_ssize_t sn;
} Rows;

#define STAGE 32

#define ROWS_PAD 8

typedef struct {
    PyObject_HEAD
    int depth;
    int want_bbo, want_trades;
    int64_t interval_ns;
    int64_t next_sample;
    uint64_t last_seq;
    PyObject *symbols; /* a set, or NULL: every stock */
    Stock *stocks[65536];
    /* orders */
    Order *orders;
    int32_t orders_cap, orders_free;
    Slot *slots;
    uint64_t hcap; /* power of 2 */
    uint64_t hcount;
    uint64_t hash_hi; /* the highest reference ever put in the hash (0: none) */
    /* the direct table: pages of PAGE order indexes by reference, page number
     * page_base + i at pages[i] for i < pages_n (the window); refs outside it or in a page
     * the table did not take are in the hash */
    OrderPage *pages;
    uint64_t page_base, frontier; /* frontier: the page of the highest reference rested */
    int64_t pages_n, pages_cap, pages_held, paged; /* pages_held: allocated; paged: orders */
    uint64_t jump_page, jumps; /* orders far beyond the window lately, near which page */
    /* levels */
    Level *levels;
    int32_t levels_cap, levels_free;
    /* names: code -> 8 raw bytes; a hash of raw name -> code */
    uint64_t *names;
    int32_t names_n, names_cap;
    uint64_t *nkeys;
    int32_t *nvals;
    uint64_t ncap;
    /* per code: the stocks it names (0: free or retired); codes no stock uses, free (reused
     * first) or retired (rows held may name them: free at the next take) */
    int32_t *nusers;
    int32_t *nfree, nfree_n, nfree_cap;
    int32_t *nretired, nretired_n, nretired_cap;
    Rows bbo, trades, depth_rows;
    int64_t *scratch;
    /* market */
    uint16_t event_code, breached; /* SEEN(byte), 0: not seen */
    int has_mwcb;
    uint64_t mwcb[3];
    unsigned long long unknown_orders, overfills, duplicate_orders, invalid, messages;
    unsigned long long zero_share_adds, names_reused;
    /* feed() runs without the GIL: busy (set and read under the GIL) refuses every other
     * call meanwhile; out of memory there is only noted (nomem) and raised with the GIL back;
     * tstate: the thread state to take the GIL back with (NULL: the GIL is held) */
    int busy, nomem;
    PyThreadState *tstate;
} BookCore;

/* ------------------------------------------------------------------ helpers */

static inline uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t rd48(const unsigned char *p)
{
    return (uint64_t)rd16(p) << 32 | rd32(p + 2);
}
static inline uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) << 32 | rd32(p + 4); }
static inline uint64_t rdname(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}
static inline uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

/* out of memory, maybe without the GIL: noted, raised by feed() (or the caller) with it */
static int nomem(BookCore *b)
{
    if (b->tstate == NULL)
        PyErr_NoMemory();
    else
        b->nomem = 1;
    return -1;
}

/* memory for rows: 64-aligned (a column's STAGE rows then fill whole cache lines) */
static int64_t *rows_alloc(size_t size)
{
    void *m = NULL;
    return posix_memalign(&m, 64, size) == 0 ? m : NULL;
}

/* the staged rows into their columns; a full stage at whole cache lines with streaming
 * stores (the columns are read next by another thread, from memory: reading each line in
 * to write all of it, as plain stores do, was a fifth of the core's time with depth rows) */
static void rows_flush(Rows *r)
{
    Py_ssize_t sn = r->sn, w = r->width, base = r->n - sn;
    if (sn == 0)
        return;
#if defined(__x86_64__) && defined(__SSE2__)
    if (sn == STAGE && ((uintptr_t)(r->d + base) & 63) == 0 && (r->stride & 7) == 0) {
        for (Py_ssize_t c = 0; c < w; c++) {
            long long *col = (long long *)(r->d + c * r->stride + base);
            const int64_t *src = r->stage + c;
            for (Py_ssize_t i = 0; i < STAGE; i++)
                _mm_stream_si64(col + i, (long long)src[i * w]);
        }
        _mm_sfence();
        r->sn = 0;
        return;
    }
#endif
    for (Py_ssize_t c = 0; c < w; c++) {
        int64_t *col = r->d + c * r->stride + base;
        const int64_t *src = r->stage + c;
        for (Py_ssize_t i = 0; i < sn; i++)
            col[i] = src[i * w];
    }
    r->sn = 0;
}

static int rows_grow(BookCore *b, Rows *r)
{
    rows_flush(r);
    Py_ssize_t cap = r->cap ? r->cap * 2 : 1024, stride = cap + ROWS_PAD;
    if ((size_t)stride > (size_t)PY_SSIZE_T_MAX / sizeof(int64_t) / (size_t)r->width)
        return nomem(b);
    int64_t *d = rows_alloc((size_t)stride * (size_t)r->width * sizeof(int64_t));
    if (d == NULL)
        return nomem(b);
    for (Py_ssize_t c = 0; c < r->width && r->n > 0; c++)
        memcpy(d + c * stride, r->d + c * r->stride, (size_t)r->n * sizeof(int64_t));
    free(r->d);
    r->d = d;
    r->cap = cap;
    r->stride = stride;
    return 0;
}

static inline int rows_push(BookCore *b, Rows *r, const int64_t *v)
{
    if (r->n == r->cap && rows_grow(b, r) < 0)
        return -1;
    memcpy(r->stage + r->sn * r->width, v, (size_t)r->width * sizeof(int64_t));
    r->n++;
    if (++r->sn == STAGE)
        rows_flush(r);
    return 0;
}

/* ------------------------------------------------------------------ order hash */

static int32_t hfind(BookCore *b, uint64_t ref)
{
    uint64_t mask = b->hcap - 1, i = mix(ref) & mask;
    const Slot *t = b->slots;
    for (;;) {
        if (t[i].val < 0)
            return -1;
        if (t[i].key == ref)
            return (int32_t)t[i].val;
        i = (i + 1) & mask;
    }
}

static int hresize(BookCore *b, uint64_t cap)
{
    Slot *t = malloc(cap * sizeof(Slot));
    if (t == NULL) {
        return nomem(b);
    }
    memset(t, 0xff, cap * sizeof(Slot));
    uint64_t mask = cap - 1;
    for (uint64_t j = 0; j < b->hcap; j++) {
        if (b->slots[j].val < 0)
            continue;
        uint64_t i = mix(b->slots[j].key) & mask;
        while (t[i].val >= 0)
            i = (i + 1) & mask;
        t[i] = b->slots[j];
    }
    free(b->slots);
    b->slots = t;
    b->hcap = cap;
    return 0;
}

static int hinsert(BookCore *b, uint64_t ref, int32_t v)
{
    if ((b->hcount + 1) * 2 > b->hcap && hresize(b, b->hcap * 2) < 0)
        return -1;
    uint64_t mask = b->hcap - 1, i = mix(ref) & mask;
    Slot *t = b->slots;
    while (t[i].val >= 0)
        i = (i + 1) & mask;
    t[i].key = ref;
    t[i].val = v;
    b->hcount++;
    return 0;
}

static void herase(BookCore *b, uint64_t ref)
{
    uint64_t mask = b->hcap - 1, i = mix(ref) & mask;
    Slot *t = b->slots;
    while (t[i].val < 0 || t[i].key != ref) {
        if (t[i].val < 0)
            return;
        i = (i + 1) & mask;
    }
    /* backward-shift deletion: pull back every later entry of the run that may move */
    uint64_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (t[j].val < 0)
            break;
        uint64_t home = mix(t[j].key) & mask;
        /* j may fill the hole i when its home is not cyclically in (i, j] */
        if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
            t[i] = t[j];
            i = j;
        }
    }
    t[i].val = -1;
    b->hcount--;
    if (b->hcap > 1024 && b->hcount * 8 < b->hcap && hresize(b, b->hcap / 2) < 0)
        b->nomem = 0; /* the larger table stays */
}

/* ------------------------------------------------------------------ order index
 *
 * Order references of a day are dense and rise (NASDAQ numbers them across all stocks as
 * they come): a page of PAGE consecutive references holds the index of each order directly
 * (a lookup is two loads, and a new order's slot sits beside the last one's), with the hash
 * for the rest. Memory stays proportional to the resting orders: a page is allocated only
 * while the pages hold PAGE_MIN orders each on average (else the order goes to the hash),
 * a page behind the frontier that falls under PAGE_KEEP orders moves them to the hash and
 * is freed, and the window of pages is at most WINDOW_MAX long (its oldest pages are moved
 * out to make room; a reference far beyond it goes to the hash). */

#define PAGE_BITS 11
#define PAGE ((uint64_t)1 << PAGE_BITS)
#define PAGE_MIN 16
#define PAGE_KEEP 32
#define WINDOW_MAX ((int64_t)1 << 18)
#define JUMPS 256 /* orders far beyond the window, near each other, that move it there */

static inline int hashed_ok(const BookCore *b, uint64_t ref)
{
    return b->hcount > 0 && ref <= b->hash_hi;
}

/* the order index of ref (-1: none) */
static inline int32_t ofind(BookCore *b, uint64_t ref)
{
    uint64_t i = (ref >> PAGE_BITS) - b->page_base;
    if (i < (uint64_t)b->pages_n) {
        const OrderPage *pg = &b->pages[i];
        if (pg->slot != NULL) {
            int32_t v = pg->slot[ref & (PAGE - 1)];
            if (v >= 0 || !pg->hashed)
                return v;
        } else if (!pg->hashed) {
            return -1;
        }
    }
    return hashed_ok(b, ref) ? hfind(b, ref) : -1;
}

/* where ofind(ref) will look first (to prefetch) */
static inline const void *oaddr(const BookCore *b, uint64_t ref)
{
    uint64_t i = (ref >> PAGE_BITS) - b->page_base;
    if (i < (uint64_t)b->pages_n && b->pages[i].slot != NULL)
        return &b->pages[i].slot[ref & (PAGE - 1)];
    return &b->slots[mix(ref) & (b->hcap - 1)];
}

/* ofind without probing further than the first place (to prefetch the order) */
static inline int32_t opeek(const BookCore *b, uint64_t ref)
{
    uint64_t i = (ref >> PAGE_BITS) - b->page_base;
    if (i < (uint64_t)b->pages_n && b->pages[i].slot != NULL)
        return b->pages[i].slot[ref & (PAGE - 1)];
    const Slot *sl = &b->slots[mix(ref) & (b->hcap - 1)];
    return sl->val >= 0 && sl->key == ref ? (int32_t)sl->val : -1;
}

static int hinsert_hi(BookCore *b, uint64_t ref, int32_t v)
{
    if (hinsert(b, ref, v) < 0)
        return -1;
    if (ref > b->hash_hi)
        b->hash_hi = ref;
    return 0;
}

/* the orders of window page i into the hash, the page freed (out of memory: those not
 * moved stay, the page marked) */
static int page_evict(BookCore *b, int64_t i)
{
    OrderPage *pg = &b->pages[i];
    if (pg->slot == NULL)
        return 0;
    pg->hashed = 1;
    uint64_t first = (b->page_base + (uint64_t)i) << PAGE_BITS;
    for (uint64_t j = 0; j < PAGE && pg->live > 0; j++) {
        if (pg->slot[j] < 0)
            continue;
        if (hinsert_hi(b, first + j, pg->slot[j]) < 0)
            return -1;
        pg->slot[j] = -1;
        pg->live--;
        b->paged--;
    }
    free(pg->slot);
    pg->slot = NULL;
    b->pages_held--;
    return 0;
}

/* make the window reach page p (> its last); 0: done, 1: p is for the hash, -1: no memory */
static int window_reach(BookCore *b, uint64_t p)
{
    if (b->pages_n == 0) {
        b->page_base = p;
    } else if (p - b->page_base - (uint64_t)b->pages_n >= (uint64_t)WINDOW_MAX / 2) {
        /* far beyond: an outlier, unless many come there (the day moved on): then the
         * window moves there, what it held to the hash */
        if (p - b->jump_page + (uint64_t)WINDOW_MAX / 2 > (uint64_t)WINDOW_MAX) {
            b->jump_page = p;
            b->jumps = 0;
        }
        if (++b->jumps < JUMPS)
            return 1;
        for (int64_t i = 0; i < b->pages_n; i++)
            if (page_evict(b, i) < 0)
                return -1;
        b->pages_n = 0;
        b->page_base = p;
        b->jumps = 0;
    }
    uint64_t need = p - b->page_base + 1;
    if (need > (uint64_t)b->pages_cap) {
        /* the empty pages at the bottom leave the window (their references, if any come,
         * are in the hash); when the window is as long as it may be, its oldest pages are
         * moved to the hash first (a quarter at a time) */
        int64_t k = 0;
        if (need > (uint64_t)WINDOW_MAX)
            for (int64_t i = 0; i < b->pages_n && (k < WINDOW_MAX / 4 || need - (uint64_t)k
                                                    > (uint64_t)WINDOW_MAX); i++, k++)
                if (page_evict(b, i) < 0)
                    return -1;
        while (k < b->pages_n && b->pages[k].slot == NULL)
            k++;
        if (k > 0) {
            memmove(b->pages, b->pages + k, (size_t)(b->pages_n - k) * sizeof(OrderPage));
            b->pages_n -= k;
            b->page_base += (uint64_t)k;
            need -= (uint64_t)k;
        }
        if (need > (uint64_t)b->pages_cap) {
            int64_t cap = b->pages_cap ? b->pages_cap : 64;
            while ((uint64_t)cap < need)
                cap *= 2;
            OrderPage *a = realloc(b->pages, (size_t)cap * sizeof(OrderPage));
            if (a == NULL)
                return nomem(b);
            b->pages = a;
            b->pages_cap = cap;
        }
    }
    /* the new pages: may hold none yet, but the hash may hold some of theirs */
    for (int64_t i = b->pages_n; i < (int64_t)need; i++) {
        uint64_t first = (b->page_base + (uint64_t)i) << PAGE_BITS;
        b->pages[i].slot = NULL;
        b->pages[i].live = 0;
        b->pages[i].hashed = hashed_ok(b, first);
    }
    b->pages_n = (int64_t)need;
    return 0;
}

/* rest ref (not indexed yet) as order oi */
static int oinsert(BookCore *b, uint64_t ref, int32_t oi)
{
    uint64_t p = ref >> PAGE_BITS;
    if (p >= b->page_base + (uint64_t)b->pages_n || b->pages_n == 0) {
        int r = window_reach(b, p);
        if (r < 0)
            return -1;
        if (r > 0)
            return hinsert_hi(b, ref, oi);
    } else if (p < b->page_base) {
        return hinsert_hi(b, ref, oi);
    }
    OrderPage *pg = &b->pages[p - b->page_base];
    if (pg->slot == NULL) {
        if (b->pages_held >= 8 + b->paged / PAGE_MIN) {
            pg->hashed = 1; /* too sparse for a page */
            return hinsert_hi(b, ref, oi);
        }
        if ((pg->slot = malloc(PAGE * sizeof(int32_t))) == NULL)
            return nomem(b);
        memset(pg->slot, 0xff, PAGE * sizeof(int32_t));
        b->pages_held++;
    }
    pg->slot[ref & (PAGE - 1)] = oi;
    pg->live++;
    b->paged++;
    if (p > b->frontier)
        b->frontier = p;
    return 0;
}

/* forget ref (indexed) */
static void oerase(BookCore *b, uint64_t ref)
{
    uint64_t i = (ref >> PAGE_BITS) - b->page_base;
    if (i < (uint64_t)b->pages_n) {
        OrderPage *pg = &b->pages[i];
        if (pg->slot != NULL && pg->slot[ref & (PAGE - 1)] >= 0) {
            pg->slot[ref & (PAGE - 1)] = -1;
            pg->live--;
            b->paged--;
            if (pg->live == 0) {
                free(pg->slot);
                pg->slot = NULL;
                b->pages_held--;
            } else if (pg->live < PAGE_KEEP && b->page_base + i + 2 <= b->frontier
                       && page_evict(b, (int64_t)i) < 0) {
                /* what stays in the page is still found there: no error */
                if (b->tstate == NULL)
                    PyErr_Clear();
                b->nomem = 0;
            }
            return;
        }
    }
    herase(b, ref);
}

/* ------------------------------------------------------------------ pools */

static void mem_free(void *p) { free(p); } /* POOL's parameter free hides free() */

/* POOL(name, Type, array, cap, free, link): name_alloc (an index from the free list, the
 * array doubled from 1024 when it is empty; out of memory, never an int32 overflow,
 * whatever the feed) and name_release (the index back on the list, linked through the
 * element's int32 field link). Orders link through next, levels through head. */
#define POOL(name, Type, array, cap, free, link)                                       \
    static int32_t name##_alloc(BookCore *b)                                           \
    {                                                                                  \
        if (b->free < 0) {                                                             \
            int32_t old = b->cap, grown = old ? old * 2 : 1024;                       \
            if (old >= (1 << 30))                                                      \
                return nomem(b);                                                       \
            void *m = NULL;                                                            \
            if (posix_memalign(&m, 64, (size_t)grown * sizeof(Type)) != 0)             \
                return nomem(b);                                                       \
            Type *a = m;                                                               \
            if (old)                                                                   \
                memcpy(a, b->array, (size_t)old * sizeof(Type));                       \
            mem_free(b->array);                                                        \
            b->array = a;                                                              \
            for (int32_t i = grown - 1; i >= old; i--) {                               \
                a[i].link = b->free;                                                   \
                b->free = i;                                                           \
            }                                                                          \
            b->cap = grown;                                                            \
        }                                                                              \
        int32_t i = b->free;                                                           \
        b->free = b->array[i].link;                                                    \
        return i;                                                                      \
    }                                                                                  \
    static void name##_release(BookCore *b, int32_t i)                                 \
    {                                                                                  \
        b->array[i].link = b->free;                                                    \
        b->free = i;                                                                   \
    }

POOL(order, Order, orders, orders_cap, orders_free, next)
POOL(level, Level, levels, levels_cap, levels_free, head)

/* ------------------------------------------------------------------ stocks and names */

static Stock *get_stock(BookCore *b, uint16_t locate)
{
    Stock *s = b->stocks[locate];
    if (s != NULL)
        return s;
    s = calloc(1, sizeof(Stock));
    if (s == NULL) {
        nomem(b);
        return NULL;
    }
    s->code = -1;
    s->emit = b->symbols == NULL;
    s->last_bbo[0] = -1;
    s->last_bbo[3] = -1;
    if (b->depth) {
        s->last_depth = calloc((size_t)b->depth * 6, sizeof(int64_t));
        if (s->last_depth == NULL) {
            free(s);
            nomem(b);
            return NULL;
        }
        for (int i = 0; i < b->depth; i++) {
            s->last_depth[6 * i] = -1;
            s->last_depth[6 * i + 3] = -1;
        }
    }
    b->stocks[locate] = s;
    return s;
}

static PyObject *name_str(uint64_t raw)
{
    const char *p = (const char *)&raw;
    Py_ssize_t n = 8;
    while (n > 0 && p[n - 1] == ' ')
        n--;
    return PyUnicode_DecodeLatin1(p, n, NULL);
}

static int push_code(BookCore *b, int32_t **a, int32_t *n, int32_t *cap, int32_t code)
{
    if (*n == *cap) {
        int32_t c = *cap ? *cap * 2 : 16;
        int32_t *d = *cap >= (1 << 29) ? NULL : realloc(*a, (size_t)c * sizeof(int32_t));
        if (d == NULL)
            return nomem(b);
        *a = d;
        *cap = c;
    }
    (*a)[(*n)++] = code;
    return 0;
}

/* codes retired before a take are free after it (no row held names them) */
static int names_taken(BookCore *b)
{
    for (int32_t i = 0; i < b->nretired_n; i++)
        if (push_code(b, &b->nfree, &b->nfree_n, &b->nfree_cap, b->nretired[i]) < 0) {
            b->nretired_n -= i; /* those not moved stay retired */
            memmove(b->nretired, b->nretired + i, (size_t)b->nretired_n * sizeof(int32_t));
            return -1;
        }
    b->nretired_n = 0;
    return 0;
}

static inline int rows_held(const BookCore *b)
{
    return b->bbo.n || b->trades.n || b->depth_rows.n;
}

/* take a name out of the name hash (backward-shift deletion, as herase) */
static void nerase(BookCore *b, uint64_t raw)
{
    uint64_t mask = b->ncap - 1, i = mix(raw) & mask;
    while (b->nvals[i] >= 0 && b->nkeys[i] != raw)
        i = (i + 1) & mask;
    if (b->nvals[i] < 0)
        return;
    uint64_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (b->nvals[j] < 0)
            break;
        uint64_t home = mix(b->nkeys[j]) & mask;
        if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
            b->nkeys[i] = b->nkeys[j];
            b->nvals[i] = b->nvals[j];
            i = j;
        }
    }
    b->nvals[i] = -1;
}

/* name (or rename) a stock; a code no stock uses any more goes to the next new name once
 * no row held names it (memory follows the stocks, not the R messages) */
static int set_name(BookCore *b, Stock *s, uint64_t raw)
{
    if (s->code >= 0) {
        int32_t old = s->code;
        s->code = -1;
        if (--b->nusers[old] == 0) {
            nerase(b, b->names[old]);
            if (rows_held(b) ? push_code(b, &b->nretired, &b->nretired_n, &b->nretired_cap, old)
                             : push_code(b, &b->nfree, &b->nfree_n, &b->nfree_cap, old))
                return -1;
        }
    }
    uint64_t mask = b->ncap - 1, i = mix(raw) & mask;
    int32_t code = -1;
    while (b->nvals[i] >= 0) {
        if (b->nkeys[i] == raw) {
            code = b->nvals[i];
            break;
        }
        i = (i + 1) & mask;
    }
    if (code >= 0) {
        b->nusers[code]++;
    } else if (b->nfree_n > 0) {
        code = b->nfree[--b->nfree_n];
        b->names_reused++;
        b->names[code] = raw;
        b->nusers[code] = 1;
        b->nkeys[i] = raw;
        b->nvals[i] = code;
    } else {
        if (b->names_n == b->names_cap) {
            int32_t cap = b->names_cap * 2;
            if (b->names_cap >= (1 << 29))
                return nomem(b);
            uint64_t *names = realloc(b->names, (size_t)cap * sizeof(uint64_t));
            if (names == NULL) {
                return nomem(b);
            }
            b->names = names;
            int32_t *users = realloc(b->nusers, (size_t)cap * sizeof(int32_t));
            if (users == NULL)
                return nomem(b);
            b->nusers = users;
            b->names_cap = cap;
        }
        code = b->names_n++;
        b->names[code] = raw;
        b->nusers[code] = 1;
        b->nkeys[i] = raw;
        b->nvals[i] = code;
        if ((uint64_t)b->names_n * 2 > b->ncap) { /* grow the name hash */
            uint64_t cap = b->ncap * 2;
            uint64_t *keys = malloc(cap * sizeof(uint64_t));
            int32_t *vals = malloc(cap * sizeof(int32_t));
            if (keys == NULL || vals == NULL) {
                free(keys);
                free(vals);
                return nomem(b);
            }
            memset(vals, 0xff, cap * sizeof(int32_t));
            for (int32_t c = 0; c < b->names_n; c++) {
                if (b->nusers[c] == 0) /* free or retired: not in the hash */
                    continue;
                uint64_t j = mix(b->names[c]) & (cap - 1);
                while (vals[j] >= 0)
                    j = (j + 1) & (cap - 1);
                keys[j] = b->names[c];
                vals[j] = c;
            }
            free(b->nkeys);
            free(b->nvals);
            b->nkeys = keys;
            b->nvals = vals;
            b->ncap = cap;
        }
    }
    s->code = code;
    if (b->symbols == NULL) {
        s->emit = 1;
    } else {
        /* a Python set: with the GIL (once per stock) */
        PyThreadState *ts = b->tstate;
        if (ts != NULL) {
            b->tstate = NULL;
            PyEval_RestoreThread(ts);
        }
        int in = -1;
        PyObject *name = name_str(raw);
        if (name != NULL) {
            in = PySet_Contains(b->symbols, name);
            Py_DECREF(name);
        }
        if (ts != NULL)
            b->tstate = PyEval_SaveThread();
        if (in < 0)
            return -1;
        s->emit = (uint8_t)in;
    }
    return 0;
}

/* ------------------------------------------------------------------ the book */

static inline uint32_t key_for(uint32_t price, int side) { return side ? ~price : price; }

/* first index of the side's sorted keys that is >= key (the keys alone: no level touched) */
static inline int32_t lower_bound(const Side *sd, uint32_t key)
{
    int32_t n = sd->n;
    const uint32_t *k = sd->keys;
    /* most activity is near the best (the end): look there first */
    if (n == 0 || k[n - 1] < key)
        return n;
    if (n >= 2 && k[n - 2] < key)
        return n - 1;
    /* branch-free (the comparisons a binary search branches on are unpredictable): the
     * answer stays in [base, base + len] */
    const uint32_t *base = k;
    int32_t len = n;
    while (len > 1) {
        int32_t half = len >> 1;
        base = base[half - 1] < key ? base + half : base;
        len -= half;
    }
    return (int32_t)(base - k) + (*base < key);
}

/* rest a new order at the back of its level; the level's rank (-1: out of memory) */
static int32_t book_add(BookCore *b, Stock *s, uint16_t locate, uint64_t ref, int side,
                        uint32_t price, uint64_t shares)
{
    Side *sd = &s->sides[side];
    uint32_t key = key_for(price, side);
    int32_t at = lower_bound(sd, key);
    int32_t lv, rank;
    int32_t oi = order_alloc(b);
    if (oi < 0)
        return -1;
    if (at < sd->n && sd->keys[at] == key) {
        lv = sd->lv[at];
        rank = sd->n - 1 - at;
    } else {
        if (sd->n == sd->cap) {
            int32_t cap = sd->cap ? sd->cap * 2 : 16;
            if (sd->cap >= (1 << 30)) {
                order_release(b, oi);
                return nomem(b);
            }
            int32_t *a = realloc(sd->lv, (size_t)cap * sizeof(int32_t));
            if (a != NULL)
                sd->lv = a;
            uint32_t *k = a == NULL ? NULL : realloc(sd->keys, (size_t)cap * sizeof(uint32_t));
            if (k == NULL) {
                order_release(b, oi);
                return nomem(b);
            }
            sd->keys = k;
            sd->cap = cap;
        }
        lv = level_alloc(b);
        if (lv < 0) {
            order_release(b, oi);
            return -1;
        }
        Level *L = &b->levels[lv];
        L->price = price;
        L->count = 0;
        L->shares = 0;
        L->head = L->tail = -1;
        memmove(sd->lv + at + 1, sd->lv + at, (size_t)(sd->n - at) * sizeof(int32_t));
        memmove(sd->keys + at + 1, sd->keys + at, (size_t)(sd->n - at) * sizeof(uint32_t));
        sd->lv[at] = lv;
        sd->keys[at] = key;
        sd->n++;
        rank = sd->n - 1 - at;
    }
    if (oinsert(b, ref, oi) < 0) {
        order_release(b, oi);
        return -1; /* a new empty level may stay: harmless, never reported */
    }
    Level *L = &b->levels[lv];
    Order *o = &b->orders[oi];
    o->ref = ref;
    o->shares = (uint32_t)shares;
    o->price = price;
    o->locate = locate;
    o->side = (uint8_t)side;
    o->level = lv;
    o->next = -1;
    o->prev = L->tail;
    if (L->tail >= 0)
        b->orders[L->tail].next = oi;
    else
        L->head = oi;
    L->tail = oi;
    L->count++;
    L->shares += shares;
    return rank;
}

/* take shares off a resting order (all: it leaves); the level's rank before */
static int32_t book_reduce(BookCore *b, int32_t oi, uint64_t shares)
{
    Order *o = &b->orders[oi];
    if (shares > o->shares) {
        b->overfills++;
        shares = o->shares;
    }
    if (shares == 0 && o->shares != 0)
        return NO_CHANGE;
    Stock *s = b->stocks[o->locate];
    int side = o->side;
    Side *sd = &s->sides[side];
    int32_t lv = o->level;
    uint32_t key = key_for(o->price, side);
    /* the rank matters only up to the rows' depth (0: top or not, for bbo): look for the
     * level among that many from the best; a deeper one gets rank lim (no row either way)
     * and is searched by price only when it empties */
    int32_t lim = b->depth > 1 ? b->depth : 1, at = -1, rank = lim;
    for (int32_t i = sd->n - 1, stop = sd->n - lim; i >= 0 && i >= stop; i--)
        if (sd->lv[i] == lv) {
            at = i;
            rank = sd->n - 1 - i;
            break;
        }
    Level *L = &b->levels[lv];
    L->shares -= shares;
    o->shares -= shares;
    if (o->shares == 0) {
        if (o->prev >= 0)
            b->orders[o->prev].next = o->next;
        else
            L->head = o->next;
        if (o->next >= 0)
            b->orders[o->next].prev = o->prev;
        else
            L->tail = o->prev;
        L->count--;
        oerase(b, o->ref);
        order_release(b, oi);
        if (L->count == 0) {
            if (at < 0)
                at = lower_bound(sd, key);
            memmove(sd->lv + at, sd->lv + at + 1, (size_t)(sd->n - at - 1) * sizeof(int32_t));
            memmove(sd->keys + at, sd->keys + at + 1,
                    (size_t)(sd->n - at - 1) * sizeof(uint32_t));
            sd->n--;
            level_release(b, lv);
        }
    }
    return rank;
}

static inline void level_values(const BookCore *b, const Side *sd, int32_t i, int64_t *out)
{
    if (i < sd->n) {
        const Level *L = &b->levels[sd->lv[sd->n - 1 - i]];
        out[0] = L->price;
        out[1] = (int64_t)L->shares;
        out[2] = L->count;
    } else {
        out[0] = -1;
        out[1] = 0;
        out[2] = 0;
    }
}

static void depth_values(const BookCore *b, const Stock *s, int64_t *out)
{
    for (int i = 0; i < b->depth; i++) {
        level_values(b, &s->sides[0], i, out + 6 * i);
        level_values(b, &s->sides[1], i, out + 6 * i + 3);
    }
}

/* a row of 4 head values then the rest from body (the stock's last values) */
static inline int rows_push_head(BookCore *b, Rows *r, const int64_t *head, const int64_t *body)
{
    if (r->n == r->cap && rows_grow(b, r) < 0)
        return -1;
    int64_t *p = r->stage + r->sn * r->width;
    memcpy(p, head, 4 * sizeof(int64_t));
    memcpy(p + 4, body, (size_t)(r->width - 4) * sizeof(int64_t));
    r->n++;
    if (++r->sn == STAGE)
        rows_flush(r);
    return 0;
}

/* levels rank.. of one side into last (3 values a level, every 6: both sides interleaved);
 * whether any changed */
static inline int side_into(const BookCore *b, const Side *sd, int32_t rank, int32_t count,
                            int64_t *last)
{
    int diff = 0;
    for (int32_t i = rank; i < count; i++) {
        int64_t v[3];
        int64_t *p = last + 6 * i;
        level_values(b, sd, i, v);
        if (p[0] != v[0] || p[1] != v[1] || p[2] != v[2]) {
            p[0] = v[0];
            p[1] = v[1];
            p[2] = v[2];
            diff = 1;
        }
    }
    return diff;
}

/* rows after a change of the given side of a stock from level rank down (the levels above
 * it are as they were): only those levels are read again, unless the stock's last values
 * are stale (changes while it was not emitted: both sides, every level, compared) */
static int changed(BookCore *b, Stock *s, uint16_t locate, uint64_t seq, int64_t ts, int32_t rank,
                   int side)
{
    if (!s->emit) {
        s->stale_bbo = s->stale_depth = 1;
        return 0;
    }
    int64_t head[4] = {(int64_t)seq, ts, locate, s->code};
    if (rank == 0 && b->want_bbo) {
        int diff = side_into(b, &s->sides[side], 0, 1, s->last_bbo + 3 * side);
        if (s->stale_bbo)
            diff |= side_into(b, &s->sides[!side], 0, 1, s->last_bbo + 3 * !side);
        s->stale_bbo = 0;
        if (diff && rows_push_head(b, &b->bbo, head, s->last_bbo) < 0)
            return -1;
    }
    if (rank < b->depth && !b->interval_ns) {
        int diff;
        if (s->stale_depth)
            diff = side_into(b, &s->sides[0], 0, b->depth, s->last_depth)
                   | side_into(b, &s->sides[1], 0, b->depth, s->last_depth + 3);
        else
            diff = side_into(b, &s->sides[side], rank, b->depth, s->last_depth + 3 * side);
        s->stale_depth = 0;
        if (diff && rows_push_head(b, &b->depth_rows, head, s->last_depth) < 0)
            return -1;
    }
    return 0;
}

/* depth rows of every emitted stock at the boundary reached (quiet boundaries are not
 * repeated: rows stay bounded by the messages), then the next boundary after ts */
static int sample(BookCore *b, int64_t ts)
{
    int64_t step = b->interval_ns;
    if (b->next_sample >= 0 && b->depth) {
        for (int l = 0; l < 65536; l++) {
            Stock *s = b->stocks[l];
            if (s == NULL || !s->emit)
                continue;
            int64_t *v = b->scratch;
            v[0] = (int64_t)b->last_seq;
            v[1] = b->next_sample;
            v[2] = l;
            v[3] = s->code;
            depth_values(b, s, v + 4);
            if (rows_push(b, &b->depth_rows, v) < 0)
                return -1;
        }
    }
    b->next_sample = (ts / step + 1) * step;
    return 0;
}

static int trade_row(BookCore *b, uint64_t seq, int64_t ts, uint16_t locate, int32_t code,
                     int64_t kind, int64_t price, uint64_t shares, int64_t side, uint64_t ref,
                     uint64_t match, int64_t printable)
{
    int64_t v[TRADES_WIDTH] = {(int64_t)seq, ts, locate, code, kind, price, (int64_t)shares,
                               side, (int64_t)ref, (int64_t)match, printable};
    return rows_push(b, &b->trades, v);
}

static signed char LENGTHS[256];

/* apply one message; -1 on an error (out of memory) */
static int apply(BookCore *b, const unsigned char *m, Py_ssize_t n, uint64_t seq)
{
    b->messages++;
    if (n == 0 || LENGTHS[m[0]] != n) {
        b->invalid++;
        b->last_seq = seq;
        return 0;
    }
    int kind = m[0];
    uint16_t locate = rd16(m + 1);
    int64_t ts = (int64_t)rd48(m + 5);
    if (b->interval_ns && ts >= b->next_sample && sample(b, ts) < 0)
        return -1;
    Stock *s;
    int32_t oi, r1, r2;
    switch (kind) {
    case 'A':
    case 'F': {
        uint64_t ref = rd64(m + 11);
        if ((s = get_stock(b, locate)) == NULL)
            return -1;
        if (s->code < 0 && set_name(b, s, rdname(m + 24)) < 0)
            return -1;
        if (ofind(b, ref) >= 0) {
            b->duplicate_orders++;
        } else if (rd32(m + 20) == 0) {
            b->zero_share_adds++; /* not rested: later references are unknown */
        } else {
            int side = m[19] == 'S';
            r1 = book_add(b, s, locate, ref, side, rd32(m + 32), rd32(m + 20));
            if (r1 < 0 || changed(b, s, locate, seq, ts, r1, side) < 0)
                return -1;
        }
        break;
    }
    case 'E':
    case 'C': {
        uint64_t ref = rd64(m + 11), shares = rd32(m + 19), match = rd64(m + 23);
        int64_t printable = kind == 'E' ? 'Y' : m[31];
        oi = ofind(b, ref);
        if (oi < 0) {
            b->unknown_orders++;
            if ((s = get_stock(b, locate)) == NULL)
                return -1;
            if (b->want_trades && s->emit
                && trade_row(b, seq, ts, locate, s->code, kind,
                             kind == 'E' ? -1 : (int64_t)rd32(m + 32), shares, 0, ref, match,
                             printable) < 0)
                return -1;
        } else {
            Order *o = &b->orders[oi];
            uint16_t own = o->locate;
            s = b->stocks[own];
            if (b->want_trades && s->emit
                && trade_row(b, seq, ts, own, s->code, kind,
                             kind == 'E' ? (int64_t)o->price : (int64_t)rd32(m + 32), shares,
                             o->side ? 'S' : 'B', ref, match, printable) < 0)
                return -1;
            int side = o->side; /* o is released when it leaves */
            r1 = book_reduce(b, oi, shares);
            if (changed(b, s, own, seq, ts, r1, side) < 0)
                return -1;
        }
        break;
    }
    case 'X':
    case 'D': {
        uint64_t ref = rd64(m + 11);
        oi = ofind(b, ref);
        if (oi < 0) {
            b->unknown_orders++;
        } else {
            uint16_t own = b->orders[oi].locate;
            int side = b->orders[oi].side;
            uint64_t shares = kind == 'X' ? rd32(m + 19) : b->orders[oi].shares;
            r1 = book_reduce(b, oi, shares);
            if (changed(b, b->stocks[own], own, seq, ts, r1, side) < 0)
                return -1;
        }
        break;
    }
    case 'U': {
        uint64_t old = rd64(m + 11), new_ref = rd64(m + 19);
        oi = ofind(b, old);
        if (oi < 0) {
            b->unknown_orders++;
        } else {
            Order *o = &b->orders[oi];
            uint16_t own = o->locate;
            int side = o->side;
            s = b->stocks[own];
            if (new_ref != old && ofind(b, new_ref) >= 0) {
                b->duplicate_orders++;
                r1 = book_reduce(b, oi, o->shares);
                if (changed(b, s, own, seq, ts, r1, side) < 0)
                    return -1;
            } else if (rd32(m + 27) == 0) {
                b->zero_share_adds++;
                r1 = book_reduce(b, oi, o->shares);
                if (changed(b, s, own, seq, ts, r1, side) < 0)
                    return -1;
            } else {
                r1 = book_reduce(b, oi, o->shares);
                r2 = book_add(b, s, own, new_ref, side, rd32(m + 31), rd32(m + 27));
                if (r2 < 0 || changed(b, s, own, seq, ts, r1 < r2 ? r1 : r2, side) < 0)
                    return -1;
            }
        }
        break;
    }
    case 'P': {
        if ((s = get_stock(b, locate)) == NULL)
            return -1;
        if (s->code < 0 && set_name(b, s, rdname(m + 24)) < 0)
            return -1;
        if (b->want_trades && s->emit
            && trade_row(b, seq, ts, locate, s->code, kind, rd32(m + 32), rd32(m + 20), m[19],
                         rd64(m + 11), rd64(m + 36), 'Y') < 0)
            return -1;
        break;
    }
    case 'Q': {
        if ((s = get_stock(b, locate)) == NULL)
            return -1;
        if (s->code < 0 && set_name(b, s, rdname(m + 19)) < 0)
            return -1;
        if (b->want_trades && s->emit
            && trade_row(b, seq, ts, locate, s->code, kind, rd32(m + 27), rd64(m + 11), 0, 0,
                         rd64(m + 31), 'Y') < 0)
            return -1;
        break;
    }
    case 'B': {
        if ((s = get_stock(b, locate)) == NULL)
            return -1;
        if (b->want_trades && s->emit
            && trade_row(b, seq, ts, locate, s->code, kind, -1, 0, 0, 0, rd64(m + 11), 0) < 0)
            return -1;
        break;
    }
    case 'R': {
        if ((s = get_stock(b, locate)) == NULL)
            return -1;
        uint64_t raw = rdname(m + 11);
        if ((s->code < 0 || b->names[s->code] != raw) && set_name(b, s, raw) < 0)
            return -1;
        s->market_category = SEEN(m[19]);
        s->round_lot = rd32(m + 21);
        s->has_round_lot = 1;
        break;
    }
    case 'H':
        if ((s = get_stock(b, locate)) == NULL)
            return -1;
        s->trading_state = SEEN(m[19]);
        memcpy(s->reason, m + 21, 4);
        s->has_reason = 1;
        break;
    case 'Y':
        if ((s = get_stock(b, locate)) == NULL)
            return -1;
        s->reg_sho = SEEN(m[19]);
        break;
    case 'h':
        if ((s = get_stock(b, locate)) == NULL)
            return -1;
        s->market_code = SEEN(m[19]);
        s->halt_action = SEEN(m[20]);
        break;
    case 'J':
        if ((s = get_stock(b, locate)) == NULL)
            return -1;
        for (int i = 0; i < 4; i++)
            s->luld[i] = rd32(m + 19 + 4 * i);
        s->has_luld = 1;
        break;
    case 'K':
        if ((s = get_stock(b, locate)) == NULL)
            return -1;
        s->ipo_time = rd32(m + 19);
        s->ipo_qualifier = SEEN(m[23]);
        s->ipo_price = rd32(m + 24);
        s->has_ipo = 1;
        break;
    case 'S':
        b->event_code = SEEN(m[11]);
        break;
    case 'V':
        for (int i = 0; i < 3; i++)
            b->mwcb[i] = rd64(m + 11 + 8 * i);
        b->has_mwcb = 1;
        break;
    case 'W':
        b->breached = SEEN(m[11]);
        break;
    default:
        break;
    }
    b->last_seq = seq;
    return 0;
}

/* ------------------------------------------------------------------ Python type */

static void BookCore_dealloc(BookCore *b)
{
    for (int l = 0; l < 65536; l++) {
        Stock *s = b->stocks[l];
        if (s != NULL) {
            free(s->sides[0].lv);
            free(s->sides[1].lv);
            free(s->sides[0].keys);
            free(s->sides[1].keys);
            free(s->last_depth);
            free(s);
        }
    }
    for (int64_t i = 0; i < b->pages_n; i++)
        free(b->pages[i].slot);
    free(b->pages);
    free(b->orders);
    free(b->slots);
    free(b->levels);
    free(b->names);
    free(b->nkeys);
    free(b->nvals);
    free(b->nusers);
    free(b->nfree);
    free(b->nretired);
    free(b->bbo.d);
    free(b->trades.d);
    free(b->depth_rows.d);
    free(b->bbo.stage);
    free(b->trades.stage);
    free(b->depth_rows.stage);
    free(b->scratch);
    Py_XDECREF(b->symbols);
    Py_TYPE(b)->tp_free((PyObject *)b);
}

static int BookCore_init(BookCore *b, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"depth", "symbols", "interval_ns", "tables", NULL};
    int depth = 10;
    PyObject *symbols = Py_None, *tables = NULL;
    long long interval = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|iOLO", kwlist, &depth, &symbols, &interval,
                                     &tables))
        return -1;
    if (b->slots != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "BookCore is initialised once");
        return -1;
    }
    if (depth < 0 || depth > 1000 || interval < 0) {
        PyErr_SetString(PyExc_ValueError, "depth must be 0..1000 and interval_ns >= 0");
        return -1;
    }
    int want_depth = 1;
    b->want_bbo = b->want_trades = 1;
    if (tables != NULL && tables != Py_None) {
        PyObject *name;
        if ((name = PyUnicode_FromString("bbo")) == NULL)
            return -1;
        b->want_bbo = PySequence_Contains(tables, name);
        Py_DECREF(name);
        if ((name = PyUnicode_FromString("trades")) == NULL)
            return -1;
        b->want_trades = PySequence_Contains(tables, name);
        Py_DECREF(name);
        if ((name = PyUnicode_FromString("depth")) == NULL)
            return -1;
        want_depth = PySequence_Contains(tables, name);
        Py_DECREF(name);
        if (b->want_bbo < 0 || b->want_trades < 0 || want_depth < 0)
            return -1;
    }
    b->depth = want_depth ? depth : 0;
    b->bbo.width = BBO_WIDTH;
    b->trades.width = TRADES_WIDTH;
    b->depth_rows.width = 4 + 6 * b->depth;
    b->interval_ns = interval;
    b->next_sample = -1;
    if (symbols != Py_None) {
        b->symbols = PySet_New(symbols);
        if (b->symbols == NULL)
            return -1;
    }
    b->hcap = 1024;
    b->slots = malloc(b->hcap * sizeof(Slot));
    b->ncap = 256;
    b->nkeys = malloc(b->ncap * sizeof(uint64_t));
    b->nvals = malloc(b->ncap * sizeof(int32_t));
    b->names_cap = 64;
    b->names = malloc((size_t)b->names_cap * sizeof(uint64_t));
    b->nusers = malloc((size_t)b->names_cap * sizeof(int32_t));
    b->scratch = malloc((size_t)(4 + 6 * (b->depth + 1)) * sizeof(int64_t));
    b->bbo.stage = malloc(STAGE * BBO_WIDTH * sizeof(int64_t));
    b->trades.stage = malloc(STAGE * TRADES_WIDTH * sizeof(int64_t));
    b->depth_rows.stage = malloc((size_t)STAGE * (size_t)b->depth_rows.width * sizeof(int64_t));
    if (!b->slots || !b->nkeys || !b->nvals || !b->names || !b->nusers || !b->scratch
        || !b->bbo.stage || !b->trades.stage || !b->depth_rows.stage) {
        PyErr_NoMemory();
        return -1;
    }
    memset(b->slots, 0xff, b->hcap * sizeof(Slot));
    memset(b->nvals, 0xff, b->ncap * sizeof(int32_t));
    b->orders_free = -1;
    b->levels_free = -1;
    return 0;
}

#define READY(b)                                                                      \
    if ((b)->slots == NULL) {                                                         \
        PyErr_SetString(PyExc_RuntimeError, "BookCore.__init__ was not called");      \
        return NULL;                                                                  \
    }                                                                                 \
    if ((b)->busy) {                                                                  \
        PyErr_SetString(PyExc_RuntimeError, "BookCore.feed is running in another thread"); \
        return NULL;                                                                  \
    }

/* bytes from which feed() lets other threads run */
#define GIL_FREE_BYTES 4096

/* the order reference of a message that names a resting order (0: none; an add's new
 * reference is beside the last add's in the direct table, which the cache holds) */
static inline uint64_t ref_of(const unsigned char *m, Py_ssize_t n)
{
    switch (m[0]) {
    case 'E': case 'C': case 'X': case 'D': case 'U':
        return n >= 19 ? rd64(m + 11) : 0;
    default:
        return 0;
    }
}

/* Prefetch what a message later in the buffer will touch: its hash slot (far ahead), then
 * the order the slot names (nearer): the book is bound by these cache misses. */
#define FAR 16
#define NEAR 8
#define NEXT 3

static inline Py_ssize_t next_pos(const unsigned char *data, Py_ssize_t size, Py_ssize_t p)
{
    if (p + 2 > size)
        return size;
    Py_ssize_t q = p + 2 + ((Py_ssize_t)data[p] << 8 | data[p + 1]);
    return q > size ? size : q;
}

static PyObject *BookCore_feed(BookCore *b, PyObject *args)
{
    Py_buffer view;
    unsigned long long seq;
    READY(b);
    if (!PyArg_ParseTuple(args, "y*K", &view, &seq))
        return NULL;
    const unsigned char *data = view.buf;
    Py_ssize_t size = view.len, pos = 0, far = 0, near = 0, next = 0;
    int failed = 0;
    /* a large piece is applied without the GIL (the Parquet threads encode meanwhile);
     * every other call of this core is refused until it is done */
    b->busy = 1;
    b->nomem = 0;
    if (size >= GIL_FREE_BYTES)
        b->tstate = PyEval_SaveThread();
    for (int i = 0; i < FAR; i++)
        far = next_pos(data, size, far);
    for (int i = 0; i < NEAR; i++)
        near = next_pos(data, size, near);
    for (int i = 0; i < NEXT; i++)
        next = next_pos(data, size, next);
    while (pos + 2 <= size) {
        Py_ssize_t len = (Py_ssize_t)data[pos] << 8 | data[pos + 1];
        if (pos + 2 + len > size)
            break;
        if (far + 2 <= size) {
            Py_ssize_t flen = (Py_ssize_t)data[far] << 8 | data[far + 1];
            if (far + 2 + flen <= size && flen > 0) {
                const unsigned char *fm = data + far + 2;
                uint64_t ref = ref_of(fm, flen);
                if (ref)
                    __builtin_prefetch(oaddr(b, ref));
                if ((fm[0] == 'A' || fm[0] == 'F') && flen >= 20) { /* reads fm[19] */
                    Stock *fs = b->stocks[rd16(fm + 1)];
                    if (fs != NULL) {
                        const Side *sd = &fs->sides[fm[19] == 'S'];
                        if (sd->n > 0)
                            __builtin_prefetch(&sd->keys[sd->n - 1]);
                    }
                }
            }
            far = next_pos(data, size, far);
        }
        if (near + 2 <= size) {
            Py_ssize_t nlen = (Py_ssize_t)data[near] << 8 | data[near + 1];
            if (near + 2 + nlen <= size && nlen > 0) {
                uint64_t ref = ref_of(data + near + 2, nlen);
                if (ref) {
                    int32_t oi = opeek(b, ref);
                    if (oi >= 0)
                        __builtin_prefetch(&b->orders[oi]);
                }
            }
            near = next_pos(data, size, near);
        }
        if (next + 2 <= size) {
            Py_ssize_t xlen = (Py_ssize_t)data[next] << 8 | data[next + 1];
            if (next + 2 + xlen <= size && xlen > 0) {
                uint64_t ref = ref_of(data + next + 2, xlen);
                if (ref) {
                    int32_t oi = opeek(b, ref);
                    if (oi >= 0) {
                        const Order *o = &b->orders[oi];
                        const Side *sd = &b->stocks[o->locate]->sides[o->side];
                        __builtin_prefetch(&b->levels[o->level]);
                        if (sd->n > 0) /* where book_reduce looks for the level */
                            __builtin_prefetch(&sd->lv[sd->n - 1]);
                        /* its neighbours in the level, which an unlink writes */
                        if (o->prev >= 0)
                            __builtin_prefetch(&b->orders[o->prev], 1);
                        if (o->next >= 0)
                            __builtin_prefetch(&b->orders[o->next], 1);
                    }
                }
            }
            next = next_pos(data, size, next);
        }
        if (apply(b, data + pos + 2, len, seq) < 0) {
            failed = 1;
            break;
        }
        seq++;
        pos += 2 + len;
    }
    if (b->tstate != NULL) {
        PyThreadState *ts = b->tstate;
        b->tstate = NULL;
        PyEval_RestoreThread(ts);
    }
    b->busy = 0;
    PyBuffer_Release(&view);
    if (failed) {
        if (b->nomem || !PyErr_Occurred())
            PyErr_NoMemory();
        b->nomem = 0;
        return NULL;
    }
    return PyLong_FromSsize_t(pos);
}

/* forget the rows taken; a very large buffer is given back */
static void rows_clear(Rows *r)
{
    r->n = 0;
    r->sn = 0;
    if (r->cap * r->width > (1 << 24)) {
        free(r->d);
        r->d = NULL;
        r->cap = r->stride = 0;
    }
}

/* the rows of r one after the other (row i's values at [i * width, (i + 1) * width)) */
static PyObject *take_rows(Rows *r)
{
    rows_flush(r);
    Py_ssize_t n = r->n, width = r->width;
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * width * (Py_ssize_t)sizeof(int64_t));
    if (out == NULL)
        return NULL;
    int64_t *dst = (int64_t *)PyBytes_AS_STRING(out);
    for (Py_ssize_t c = 0; c < width; c++) {
        const int64_t *col = r->d + c * r->stride;
        for (Py_ssize_t i = 0; i < n; i++)
            dst[i * width + c] = col[i];
    }
    rows_clear(r);
    return out;
}

static PyObject *BookCore_take(BookCore *b, PyObject *unused)
{
    (void)unused;
    READY(b);
    if (names_taken(b) < 0)
        return NULL;
    PyObject *x = take_rows(&b->bbo);
    PyObject *y = x ? take_rows(&b->trades) : NULL;
    PyObject *z = y ? take_rows(&b->depth_rows) : NULL;
    if (!x || !y || !z) {
        Py_XDECREF(x);
        Py_XDECREF(y);
        Py_XDECREF(z);
        return NULL;
    }
    return Py_BuildValue("(NNN)", x, y, z);
}

/* the rows of r column after column (column c of n rows at [c * n, (c + 1) * n)): as the
 * core holds them, a copy per column */
static PyObject *take_columns_of(Rows *r)
{
    rows_flush(r);
    Py_ssize_t n = r->n, width = r->width;
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * width * (Py_ssize_t)sizeof(int64_t));
    if (out == NULL)
        return NULL;
    int64_t *dst = (int64_t *)PyBytes_AS_STRING(out);
    for (Py_ssize_t c = 0; c < width && n > 0; c++)
        memcpy(dst + c * n, r->d + c * r->stride, (size_t)n * sizeof(int64_t));
    rows_clear(r);
    return out;
}

static PyObject *BookCore_take_columns(BookCore *b, PyObject *unused)
{
    (void)unused;
    READY(b);
    if (names_taken(b) < 0)
        return NULL;
    PyObject *x = take_columns_of(&b->bbo);
    PyObject *y = x ? take_columns_of(&b->trades) : NULL;
    PyObject *z = y ? take_columns_of(&b->depth_rows) : NULL;
    if (!x || !y || !z) {
        Py_XDECREF(x);
        Py_XDECREF(y);
        Py_XDECREF(z);
        return NULL;
    }
    return Py_BuildValue("(NNN)", x, y, z);
}

/* ------------------------------------------------------------------ rows handed out */

/* A table's rows block handed to Python as it is (take_buffers: no copy); its memory goes
 * back to a small pool when the last reader lets go, and the next block a take needs comes
 * from there (no fresh pages to fault in). The pool is used only with the GIL held. */
typedef struct {
    PyObject_HEAD
    int64_t *d;
    Py_ssize_t size; /* bytes */
} RowsBlock;

#define POOL_MAX 6
#define POOL_BLOCK_MAX ((Py_ssize_t)8 << 24) /* a larger block is not kept (nor replaced) */
static struct {
    int64_t *d;
    Py_ssize_t size;
} pool[POOL_MAX];
static int pool_n;

static void RowsBlock_dealloc(RowsBlock *self)
{
    if (self->d != NULL) {
        if (pool_n < POOL_MAX && self->size <= POOL_BLOCK_MAX) {
            pool[pool_n].d = self->d;
            pool[pool_n].size = self->size;
            pool_n++;
        } else {
            free(self->d);
        }
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int RowsBlock_getbuffer(RowsBlock *self, Py_buffer *view, int flags)
{
    return PyBuffer_FillInfo(view, (PyObject *)self, self->d, self->size, 1, flags);
}

static PyBufferProcs RowsBlock_as_buffer = {.bf_getbuffer = (getbufferproc)RowsBlock_getbuffer};

static PyTypeObject RowsBlockType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "moldudp64._book.RowsBlock",
    .tp_basicsize = sizeof(RowsBlock),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A table's rows as the core held them (read-only bytes).",
    .tp_dealloc = (destructor)RowsBlock_dealloc,
    .tp_as_buffer = &RowsBlock_as_buffer,
};

/* memory of exactly size bytes: a pooled block of that size (each table's blocks keep one
 * size while its room does), else malloc; when every entry is taken by other sizes, the
 * oldest is freed (the pool follows the sizes in use) */
static int64_t *block_alloc(Py_ssize_t size)
{
    for (int i = pool_n - 1; i >= 0; i--)
        if (pool[i].size == size) {
            int64_t *d = pool[i].d;
            pool[i] = pool[--pool_n];
            return d;
        }
    if (pool_n == POOL_MAX) {
        free(pool[0].d);
        pool[0] = pool[--pool_n];
    }
    return rows_alloc((size_t)size);
}

/* (buffer, rows, stride): r's block as it is (column c of rows values at [c * stride,
 * c * stride + rows) of its int64 values), r given a block of the same room; None when
 * r holds no rows */
static PyObject *take_block(Rows *r)
{
    rows_flush(r);
    if (r->n == 0) {
        rows_clear(r);
        Py_RETURN_NONE;
    }
    RowsBlock *blk = PyObject_New(RowsBlock, &RowsBlockType);
    if (blk == NULL)
        return NULL;
    Py_ssize_t size = r->stride * r->width * (Py_ssize_t)sizeof(int64_t);
    blk->d = NULL;
    blk->size = 0;
    PyObject *out = Py_BuildValue("(Onn)", (PyObject *)blk, r->n, r->stride);
    Py_DECREF(blk);
    if (out == NULL)
        return NULL; /* r keeps its rows */
    blk->d = r->d; /* the tuple holds blk */
    blk->size = size;
    r->n = 0;
    if (size > POOL_BLOCK_MAX) { /* a very large block is not replaced */
        r->d = NULL;
        r->cap = r->stride = 0;
    } else if ((r->d = block_alloc(size)) == NULL) {
        r->cap = r->stride = 0; /* rows_grow tries again when a row comes */
    }
    return out;
}

static PyObject *BookCore_take_buffers(BookCore *b, PyObject *unused)
{
    (void)unused;
    READY(b);
    if (names_taken(b) < 0)
        return NULL;
    PyObject *x = take_block(&b->bbo);
    PyObject *y = x ? take_block(&b->trades) : NULL;
    PyObject *z = y ? take_block(&b->depth_rows) : NULL;
    if (!x || !y || !z) {
        Py_XDECREF(x);
        Py_XDECREF(y);
        Py_XDECREF(z);
        return NULL;
    }
    return Py_BuildValue("(NNN)", x, y, z);
}

static PyObject *BookCore_pending(BookCore *b, PyObject *unused)
{
    (void)unused;
    READY(b);
    return PyLong_FromSsize_t(b->bbo.n + b->trades.n + b->depth_rows.n);
}

static PyObject *BookCore_names(BookCore *b, PyObject *arg)
{
    READY(b);
    Py_ssize_t start = PyLong_AsSsize_t(arg);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    if (start < 0)
        start = 0;
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = start; i < b->names_n; i++) {
        PyObject *s = name_str(b->names[i]);
        if (s == NULL || PyList_Append(list, s) < 0) {
            Py_XDECREF(s);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(s);
    }
    return list;
}

static int locate_arg(PyObject *arg, uint16_t *out)
{
    long v = PyLong_AsLong(arg);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 0 || v > 65535) {
        PyErr_SetString(PyExc_ValueError, "a stock locate is 0..65535");
        return -1;
    }
    *out = (uint16_t)v;
    return 0;
}

static PyObject *BookCore_bbo(BookCore *b, PyObject *arg)
{
    uint16_t locate;
    READY(b);
    if (locate_arg(arg, &locate) < 0)
        return NULL;
    int64_t v[6] = {-1, 0, 0, -1, 0, 0};
    Stock *s = b->stocks[locate];
    if (s != NULL) {
        level_values(b, &s->sides[0], 0, v);
        level_values(b, &s->sides[1], 0, v + 3);
    }
    return Py_BuildValue("(LLLLLL)", v[0], v[1], v[2], v[3], v[4], v[5]);
}

static PyObject *BookCore_levels(BookCore *b, PyObject *args)
{
    int locate, side, count;
    READY(b);
    if (!PyArg_ParseTuple(args, "iii", &locate, &side, &count))
        return NULL;
    if (locate < 0 || locate > 65535 || side < 0 || side > 1) {
        PyErr_SetString(PyExc_ValueError, "locate 0..65535, side 0 (bid) or 1 (ask)");
        return NULL;
    }
    PyObject *list = PyList_New(0);
    Stock *s = b->stocks[locate];
    if (list == NULL || s == NULL)
        return list;
    const Side *sd = &s->sides[side];
    for (int32_t i = 0; i < count && i < sd->n; i++) {
        int64_t v[3];
        level_values(b, sd, i, v);
        PyObject *t = Py_BuildValue("(LLL)", v[0], v[1], v[2]);
        if (t == NULL || PyList_Append(list, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(t);
    }
    return list;
}

static PyObject *BookCore_orders(BookCore *b, PyObject *args)
{
    int locate, side;
    long long price;
    READY(b);
    if (!PyArg_ParseTuple(args, "iiL", &locate, &side, &price))
        return NULL;
    if (locate < 0 || locate > 65535 || side < 0 || side > 1) {
        PyErr_SetString(PyExc_ValueError, "locate 0..65535, side 0 (bid) or 1 (ask)");
        return NULL;
    }
    PyObject *list = PyList_New(0);
    Stock *s = b->stocks[locate];
    if (list == NULL || s == NULL || price < 0 || price > 0xFFFFFFFFLL)
        return list;
    const Side *sd = &s->sides[side];
    uint32_t key = key_for((uint32_t)price, side);
    int32_t at = lower_bound(sd, key);
    if (at >= sd->n || sd->keys[at] != key)
        return list;
    for (int32_t oi = b->levels[sd->lv[at]].head; oi >= 0; oi = b->orders[oi].next) {
        PyObject *t = Py_BuildValue("(KK)", (unsigned long long)b->orders[oi].ref,
                                    (unsigned long long)b->orders[oi].shares);
        if (t == NULL || PyList_Append(list, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(t);
    }
    return list;
}

static PyObject *BookCore_order(BookCore *b, PyObject *arg)
{
    READY(b);
    unsigned long long ref = PyLong_AsUnsignedLongLong(arg);
    if (ref == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    int32_t oi = ofind(b, ref);
    if (oi < 0)
        Py_RETURN_NONE;
    Order *o = &b->orders[oi];
    return Py_BuildValue("(iiIK)", o->locate, o->side, o->price, (unsigned long long)o->shares);
}

static PyObject *chr_or_none(uint16_t c)
{
    if (c == 0)
        Py_RETURN_NONE;
    char s = (char)(c & 0xff);
    return PyUnicode_DecodeLatin1(&s, 1, NULL);
}

static PyObject *BookCore_state(BookCore *b, PyObject *arg)
{
    uint16_t locate;
    READY(b);
    if (locate_arg(arg, &locate) < 0)
        return NULL;
    PyObject *t = PyTuple_New(19);
    if (t == NULL)
        return NULL;
    Stock *s = b->stocks[locate];
    PyObject *v[19];
    for (int i = 0; i < 19; i++) {
        v[i] = Py_None;
        Py_INCREF(Py_None);
    }
#define SET(i, expr)       \
    do {                   \
        Py_DECREF(v[i]);   \
        v[i] = (expr);     \
    } while (0)
    if (s != NULL) {
        SET(0, chr_or_none(s->trading_state));
        if (s->has_reason) {
            Py_ssize_t n = 4;
            while (n > 0 && s->reason[n - 1] == ' ')
                n--;
            SET(1, PyUnicode_DecodeLatin1(s->reason, n, NULL));
        }
        SET(2, chr_or_none(s->reg_sho));
        SET(3, chr_or_none(s->market_code));
        SET(4, chr_or_none(s->halt_action));
        if (s->has_luld)
            for (int i = 0; i < 4; i++)
                SET(5 + i, PyLong_FromUnsignedLong(s->luld[i]));
        if (s->has_ipo) {
            SET(9, PyLong_FromUnsignedLong(s->ipo_time));
            SET(10, chr_or_none(s->ipo_qualifier));
            SET(11, PyLong_FromUnsignedLong(s->ipo_price));
        }
        SET(12, chr_or_none(s->market_category));
        if (s->has_round_lot)
            SET(13, PyLong_FromUnsignedLong(s->round_lot));
    }
    SET(14, chr_or_none(b->event_code));
    if (b->has_mwcb)
        for (int i = 0; i < 3; i++)
            SET(15 + i, PyLong_FromUnsignedLongLong(b->mwcb[i]));
    SET(18, chr_or_none(b->breached));
#undef SET
    for (int i = 0; i < 19; i++) {
        if (v[i] == NULL) {
            for (int j = i + 1; j < 19; j++)
                Py_XDECREF(v[j]);
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, v[i]);
    }
    return t;
}

static PyObject *BookCore_locates(BookCore *b, PyObject *unused)
{
    (void)unused;
    READY(b);
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    for (long l = 0; l < 65536; l++) {
        if (b->stocks[l] == NULL)
            continue;
        PyObject *x = PyLong_FromLong(l);
        if (x == NULL || PyList_Append(list, x) < 0) {
            Py_XDECREF(x);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(x);
    }
    return list;
}

static PyObject *BookCore_name_code(BookCore *b, PyObject *arg)
{
    uint16_t locate;
    READY(b);
    if (locate_arg(arg, &locate) < 0)
        return NULL;
    Stock *s = b->stocks[locate];
    return PyLong_FromLong(s == NULL ? -1 : s->code);
}

static PyObject *BookCore_orders_resting(BookCore *b, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong(b->hcount + (uint64_t)b->paged);
}

static PyObject *BookCore_last_seq(BookCore *b, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong(b->last_seq);
}

static PyMethodDef BookCore_methods[] = {
    {"feed", (PyCFunction)BookCore_feed, METH_VARARGS,
     "feed(blocks, seq) -> bytes used: apply BinaryFILE-framed messages."},
    {"take", (PyCFunction)BookCore_take, METH_NOARGS, "The bbo, trades, depth rows held."},
    {"take_columns", (PyCFunction)BookCore_take_columns, METH_NOARGS,
     "As take(), each table's values column after column."},
    {"take_buffers", (PyCFunction)BookCore_take_buffers, METH_NOARGS,
     "As take_columns(), without a copy: per table (buffer, rows, stride) or None."},
    {"pending", (PyCFunction)BookCore_pending, METH_NOARGS, "Rows held."},
    {"names", (PyCFunction)BookCore_names, METH_O, "Stock names by code from start."},
    {"bbo", (PyCFunction)BookCore_bbo, METH_O, "Best bid and offer of a stock."},
    {"levels", (PyCFunction)BookCore_levels, METH_VARARGS, "The best levels of a side."},
    {"orders", (PyCFunction)BookCore_orders, METH_VARARGS, "The orders of a level."},
    {"order", (PyCFunction)BookCore_order, METH_O, "A resting order, or None."},
    {"state", (PyCFunction)BookCore_state, METH_O, "A stock's state and the market's."},
    {"locates", (PyCFunction)BookCore_locates, METH_NOARGS, "Locates of the stocks seen."},
    {"name_code", (PyCFunction)BookCore_name_code, METH_O, "A stock's name code (-1: none)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef BookCore_members[] = {
    {"unknown_orders", T_ULONGLONG, offsetof(BookCore, unknown_orders), READONLY, NULL},
    {"overfills", T_ULONGLONG, offsetof(BookCore, overfills), READONLY, NULL},
    {"duplicate_orders", T_ULONGLONG, offsetof(BookCore, duplicate_orders), READONLY, NULL},
    {"invalid", T_ULONGLONG, offsetof(BookCore, invalid), READONLY, NULL},
    {"messages", T_ULONGLONG, offsetof(BookCore, messages), READONLY, NULL},
    {"zero_share_adds", T_ULONGLONG, offsetof(BookCore, zero_share_adds), READONLY, NULL},
    {"names_reused", T_ULONGLONG, offsetof(BookCore, names_reused), READONLY,
     "Times a name code was given a new name (a reader of names() reads them all again)."},
    {"depth", T_INT, offsetof(BookCore, depth), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef BookCore_getset[] = {
    {"orders_resting", (getter)BookCore_orders_resting, NULL, "Orders in the book.", NULL},
    {"last_seq", (getter)BookCore_last_seq, NULL, "The last message's sequence number.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject BookCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "moldudp64._book.BookCore",
    .tp_basicsize = sizeof(BookCore),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The ITCH 5.0 order book (C twin of moldudp64.itch50.book.PyBookCore).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)BookCore_init,
    .tp_dealloc = (destructor)BookCore_dealloc,
    .tp_methods = BookCore_methods,
    .tp_members = BookCore_members,
    .tp_getset = BookCore_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_book",
    .m_doc = "Optional C twin of moldudp64.itch50.book.PyBookCore.",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__book(void)
{
    static const struct {
        char t;
        signed char n;
    } lengths[] = {{'A', 36}, {'F', 40}, {'E', 31}, {'C', 36}, {'X', 23}, {'D', 19},
                   {'U', 35}, {'P', 44}, {'Q', 40}, {'B', 19}, {'R', 39}, {'H', 25},
                   {'Y', 20}, {'h', 21}, {'J', 35}, {'K', 28}, {'S', 12}, {'V', 35},
                   {'W', 12}, {'L', 26}, {'I', 50}, {'N', 20}, {'O', 48}};
    for (size_t i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++)
        LENGTHS[(unsigned char)lengths[i].t] = lengths[i].n;
    if (PyType_Ready(&BookCoreType) < 0 || PyType_Ready(&RowsBlockType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&BookCoreType);
    if (PyModule_AddObject(m, "BookCore", (PyObject *)&BookCoreType) < 0) {
        Py_DECREF(&BookCoreType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
