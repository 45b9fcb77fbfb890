/*
 * The scoring kernel on Intel AMX (Xeon since Sapphire Rapids): 16 x 16 tiles of float32
 * scores, each a TDPBF16PS over 32 dims of bfloat16 inputs (16 x 32 by 32 x 16 products,
 * summed in float32), about 10x the multiply-adds per cycle of AVX-512 FMAs. Linux only: the
 * process asks the kernel for the tile state once (arch_prctl), which metaembed_amx_usable
 * does.
 *
 * Accuracy: bfloat16 holds 8 significant bits, so every float32 input is split into parts
 * that bfloat16 holds exactly and the products of the parts are summed (as in split-precision
 * GEMMs):
 * - a query value q = q_hi + q_lo (q_hi rounded to bfloat16, q_lo the rounded rest), within
 *   2^-18 |q|, far below the rounding of any stored dtype here;
 * - bfloat16 and int8 candidates are exact in bfloat16: two products, q_hi c + q_lo c (an int8
 *   vector's scale multiplies its dots before the max);
 * - float16 candidates (11 significant bits) are exactly c_hi + c_lo, c_hi rounded to 8 bits:
 *   three products, q_hi c_hi + q_lo c_hi + q_hi c_lo (q_lo c_lo is below 2^-18 of q c);
 * - float32 storage is not scored here (its 24 bits would need more parts than the FMAs
 *   cost); _native.c sends it to the AVX-512 copy.
 *
 * Layout per call: the queries' parts as B tiles, (column blocks of 16 query vectors, steps of
 * 32 dims, part) x (16 dim pairs, 16 vectors, 2 dims); per block of candidates (about 64
 * rows, whole row tiles), their r_c vectors are decoded into row-major bfloat16 parts (rows,
 * dims padded to 32) that the A tiles read with the row stride, while the previous block is
 * scored; 2 x 1 tiles of scores (32 candidate vectors x 16 query vectors) are stored to a
 * (rows, query vectors) block, maxed over each candidate's rows lane-wise and summed over each
 * query's vectors. _native.c picks this copy only for the shapes where it beat the AVX-512
 * one (amx_pays): one query reads each decoded value for one column block, and the decoding
 * (not the tiles) then bounds the speed.
 */
#include "_native_common.h"

/* AMX intrinsics and cpu_supports("amx-tile") need GCC 12 or clang 16; older compilers
   build the other copies and report AMX unavailable */
#if defined(__clang__)
#define ME_AMX_COMPILER (__clang_major__ >= 16)
#elif defined(__GNUC__)
#define ME_AMX_COMPILER (__GNUC__ >= 12)
#else
#define ME_AMX_COMPILER 0
#endif

#if defined(ME_HAVE_AVX2) && defined(__linux__) && ME_AMX_COMPILER
#include <sys/syscall.h>
#include <unistd.h>

#define ME_AMX_TARGET                                                                         \
    __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,"  \
                          "f16c")))
#define ME_AMX_INLINE static inline __attribute__((always_inline)) ME_AMX_TARGET

#define ME_ARCH_REQ_XCOMP_PERM 0x1023
#define ME_XFEATURE_XTILEDATA 18
#define ME_BLOCK_ROWS 64 /* candidate vectors decoded per block (at least one unit) */
#define ME_AMX_QUERY_BYTES (1024 * 1024) /* query parts per pass over the candidates */

/* Whether this CPU and OS run the AMX copy (asks the OS for the tile state once). */
int metaembed_amx_usable(void) {
    static int usable = -1;
    if (usable < 0) {
        __builtin_cpu_init();
        usable = __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-bf16") &&
                 __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") &&
                 syscall(SYS_arch_prctl, ME_ARCH_REQ_XCOMP_PERM, ME_XFEATURE_XTILEDATA) == 0;
    }
    return usable;
}

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t bytes_per_row[16];
    uint8_t rows[16];
} TileConfig;

/* float32 to bfloat16 bits, rounded to nearest even (finite inputs). */
static uint16_t bf16_bits(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    bits += 0x7FFFu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

static float bf16_float(uint16_t half) {
    uint32_t bits = (uint32_t)half << 16;
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

/*
 * B tiles of `vectors` query vectors: tile (block, step, part) holds, at row r, column n,
 * element e, part `part` (0 hi, 1 lo) of vector block * 16 + n at dim step * 32 + 2r + e.
 */
static void query_tiles(const float *queries, int64_t vectors, int64_t dim, int64_t steps,
                        uint16_t *tiles) {
    const int64_t blocks = (vectors + 15) / 16;
    memset(tiles, 0, (size_t)(blocks * steps * 2 * 512) * sizeof(uint16_t));
    for (int64_t m = 0; m < vectors; m++)
        for (int64_t d = 0; d < dim; d++) {
            const float value = queries[m * dim + d];
            const uint16_t hi = bf16_bits(value);
            const uint16_t lo = bf16_bits(value - bf16_float(hi));
            uint16_t *tile = tiles + ((m / 16 * steps + d / 32) * 2) * 512;
            const int64_t at = (d % 32) / 2 * 32 + m % 16 * 2 + d % 2;
            tile[at] = hi;
            tile[512 + at] = lo;
        }
}

/* One stored vector as bfloat16 parts (hi, and lo for float16), dims [0, dim). */
ME_AMX_INLINE void decode_row(const void *vector, int64_t dim, uint16_t *hi, uint16_t *lo,
                              const int kind) {
    const __m512 split = _mm512_set1_ps(65537.0f); /* 2^16 + 1 */
    for (int64_t d = 0; d < dim; d += 32) {
        const __mmask32 mask = dim - d >= 32 ? 0xFFFFFFFFu : (1u << (dim - d)) - 1u;
        if (kind == ME_KIND_BF16) {
            _mm512_storeu_si512(hi + d,
                                _mm512_maskz_loadu_epi16(mask, (const uint16_t *)vector + d));
        } else if (kind == ME_KIND_F16) {
            __m512i raw = _mm512_maskz_loadu_epi16(mask, (const uint16_t *)vector + d);
            __m512 low = _mm512_cvtph_ps(_mm512_castsi512_si256(raw)); /* dims d .. d + 15 */
            __m512 high = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(raw, 1));
            /* rounded to 8 significant bits (Veltkamp's split: exact in bfloat16), and the
               rest, at most 2^-9 of the value and exact too (float16 has 11 bits) */
            __m512 low_t = _mm512_mul_ps(low, split), high_t = _mm512_mul_ps(high, split);
            __m512 low_hi = _mm512_sub_ps(low_t, _mm512_sub_ps(low_t, low));
            __m512 high_hi = _mm512_sub_ps(high_t, _mm512_sub_ps(high_t, high));
            _mm512_storeu_si512(hi + d, (__m512i)_mm512_cvtne2ps_pbh(high_hi, low_hi));
            _mm512_storeu_si512(lo + d, (__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(high, high_hi),
                                                                      _mm512_sub_ps(low, low_hi)));
        } else { /* int8: exact in bfloat16 */
            __m256i bytes = _mm256_maskz_loadu_epi8(mask, (const int8_t *)vector + d);
            __m512 low = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(bytes)));
            __m512 high =
                _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(bytes, 1)));
            _mm512_storeu_si512(hi + d, (__m512i)_mm512_cvtne2ps_pbh(high, low));
        }
    }
}

/*
 * A block's rows are ordered by tier, then candidate, then vector: each tier's share of a
 * block is one stretch of the tier (one loop over rows * dim values when dim is a multiple of
 * 32), not a loop per vector (which cost a third more at D = 128).
 */
typedef struct {
    int64_t tiers;                   /* tiers holding the first r_c vectors */
    int64_t used[ME_MAX_TIERS];      /* vectors read from each */
    int64_t first_row[ME_MAX_TIERS]; /* where each tier's rows start in a block */
    int64_t first_vector[ME_MAX_TIERS];
} BlockShape;

typedef struct {
    const char *source;
    int64_t rows, first_row;
} Run;

/* Stretches of stored rows for candidates [first, first + per_block); past `stop` the last
   candidate again (`pad`), or nothing. Returns the number of runs. */
static int64_t block_runs(const Layout *layout, const BlockShape *shape, int64_t per_block,
                          int64_t first, int64_t stop, int pad, Run *runs) {
    int64_t count = stop - first < per_block ? stop - first : per_block, n = 0;
    if (count <= 0) return 0;
    const int64_t row_bytes = layout->dim * layout->element_bytes;
    for (int64_t t = 0; t < shape->tiers; t++) {
        const int64_t size = layout->sizes[t], used = shape->used[t];
        const char *tier = layout->base[t];
        if (used == size) {
            Run run = {tier + first * size * row_bytes, count * used, shape->first_row[t]};
            runs[n++] = run;
        } else
            for (int64_t c = 0; c < count; c++) {
                Run run = {tier + (first + c) * size * row_bytes, used,
                           shape->first_row[t] + c * used};
                runs[n++] = run;
            }
        for (int64_t c = count; pad && c < per_block; c++) {
            Run run = {tier + (stop - 1) * size * row_bytes, used, shape->first_row[t] + c * used};
            runs[n++] = run;
        }
    }
    return n;
}

/* `rows` consecutive stored rows as bfloat16 parts at row stride `padded`. */
ME_AMX_INLINE void decode_rows(const char *source, int64_t rows, int64_t dim, int64_t padded,
                               uint16_t *hi, uint16_t *lo, const int kind) {
    if (dim == padded) {
        decode_row(source, rows * dim, hi, lo, kind);
        return;
    }
    const int64_t row_bytes = dim * element_bytes_of(kind);
    for (int64_t r = 0; r < rows; r++)
        decode_row(source + r * row_bytes, dim, hi + r * padded, lo + r * padded, kind);
}

/*
 * Work spread over the tile steps of the current block: decoding the next block's rows and
 * fetching the block after it into the cache, a share per step (on the 2-core Xeon this
 * measured no faster than decoding in a phase of its own, within run-to-run noise: the
 * decoding's vector work, not waiting on memory, is what one query spends its time on).
 */
typedef struct {
    Run *runs, *later; /* the next block's stretches; the one after it's */
    int64_t num_runs, num_later;
    uint16_t *hi, *lo; /* (rows, padded) the next block's parts */
    int64_t rows, dim, padded, row_bytes;
    int64_t run, run_done, decoded; /* decoding cursor */
    int64_t later_bytes, fetch_run, fetch_done, fetched; /* fetching cursor */
} Pipeline;

static void pipeline_start(Pipeline *work, int64_t num_runs, int64_t num_later, uint16_t *hi,
                           uint16_t *lo) {
    work->num_runs = num_runs;
    work->num_later = num_later;
    work->hi = hi;
    work->lo = lo;
    work->run = work->run_done = work->decoded = 0;
    work->fetch_run = work->fetch_done = work->fetched = 0;
    work->later_bytes = 0;
    for (int64_t i = 0; i < num_later; i++) work->later_bytes += work->later[i].rows * work->row_bytes;
}

/* Do the pipeline's share up to `step` of `steps`. */
ME_AMX_INLINE void advance(Pipeline *work, int64_t step, int64_t steps, const int kind) {
    const int64_t rows_due = work->num_runs ? work->rows * step / steps : 0;
    while (work->decoded < rows_due && work->run < work->num_runs) {
        const Run *run = &work->runs[work->run];
        int64_t take = run->rows - work->run_done;
        if (take > rows_due - work->decoded) take = rows_due - work->decoded;
        const int64_t row = run->first_row + work->run_done;
        decode_rows(run->source + work->run_done * work->row_bytes, take, work->dim,
                    work->padded, work->hi + row * work->padded, work->lo + row * work->padded,
                    kind);
        work->decoded += take;
        work->run_done += take;
        if (work->run_done == run->rows) {
            work->run++;
            work->run_done = 0;
        }
    }
    const int64_t bytes_due = work->later_bytes * step / steps;
    while (work->fetched < bytes_due && work->fetch_run < work->num_later) {
        const Run *run = &work->later[work->fetch_run];
        _mm_prefetch(run->source + work->fetch_done, _MM_HINT_T0);
        work->fetch_done += 64;
        work->fetched += 64;
        if (work->fetch_done >= run->rows * work->row_bytes) {
            work->fetched += run->rows * work->row_bytes - work->fetch_done;
            work->fetch_run++;
            work->fetch_done = 0;
        }
    }
}

/*
 * Scores of `tiles` row tiles of decoded candidate vectors (hi, lo: (tiles * 16, padded)
 * bfloat16) against one column block of query parts, into rows of `out` (row stride
 * out_stride floats), advancing `work` once per step of 32 dims. Tiles: 0-1 scores, 2-3
 * candidate hi, 4-5 candidate lo, 6-7 query hi and lo.
 */
ME_AMX_INLINE void score_tiles(const uint16_t *hi, const uint16_t *lo, int64_t tiles,
                               int64_t padded, int64_t steps, const uint16_t *query, float *out,
                               int64_t out_stride, Pipeline *work, int64_t *step,
                               int64_t total_steps, const int kind) {
    const int64_t row_bytes = padded * 2, out_bytes = out_stride * 4;
    int64_t t = 0;
    for (; t + 2 <= tiles; t += 2) {
        const uint16_t *hi0 = hi + t * 16 * padded, *lo0 = lo + t * 16 * padded;
        _tile_zero(0);
        _tile_zero(1);
        for (int64_t s = 0; s < steps; s++) {
            _tile_loadd(6, query + s * 1024, 64);
            _tile_loadd(2, hi0 + s * 32, row_bytes);
            _tile_dpbf16ps(0, 2, 6);
            _tile_loadd(3, hi0 + 16 * padded + s * 32, row_bytes);
            _tile_dpbf16ps(1, 3, 6);
            _tile_loadd(7, query + s * 1024 + 512, 64);
            _tile_dpbf16ps(0, 2, 7);
            _tile_dpbf16ps(1, 3, 7);
            if (kind == ME_KIND_F16) {
                _tile_loadd(4, lo0 + s * 32, row_bytes);
                _tile_dpbf16ps(0, 4, 6);
                _tile_loadd(5, lo0 + 16 * padded + s * 32, row_bytes);
                _tile_dpbf16ps(1, 5, 6);
            }
            advance(work, ++*step, total_steps, kind);
        }
        _tile_stored(0, out + t * 16 * out_stride, out_bytes);
        _tile_stored(1, out + (t + 1) * 16 * out_stride, out_bytes);
    }
    if (t < tiles) {
        const uint16_t *hi0 = hi + t * 16 * padded, *lo0 = lo + t * 16 * padded;
        _tile_zero(0);
        for (int64_t s = 0; s < steps; s++) {
            _tile_loadd(6, query + s * 1024, 64);
            _tile_loadd(7, query + s * 1024 + 512, 64);
            _tile_loadd(2, hi0 + s * 32, row_bytes);
            _tile_dpbf16ps(0, 2, 6);
            _tile_dpbf16ps(0, 2, 7);
            if (kind == ME_KIND_F16) {
                _tile_loadd(4, lo0 + s * 32, row_bytes);
                _tile_dpbf16ps(0, 4, 6);
            }
            advance(work, ++*step, total_steps, kind);
        }
        _tile_stored(0, out + t * 16 * out_stride, out_bytes);
    }
}

/* scores[q][first + c] for the block's `count` candidates, from the dots of its rows. */
ME_AMX_INLINE void reduce_block(const float *dots, const Layout *layout, const BlockShape *shape,
                                int64_t first, int64_t count, int64_t num_queries, int64_t r_q,
                                int64_t lanes, float *best, float *scores, int64_t stride,
                                const int kind) {
    for (int64_t c = 0; c < count; c++) /* max over each candidate's rows, lane-wise */
        for (int64_t b = 0; b < lanes; b += 16) {
            __m512 top = _mm512_set1_ps(-INFINITY);
            for (int64_t t = 0; t < shape->tiers; t++)
                for (int64_t i = 0; i < shape->used[t]; i++) {
                    const int64_t row = shape->first_row[t] + c * shape->used[t] + i;
                    __m512 dot = _mm512_load_ps(dots + row * lanes + b); /* (16,) */
                    if (kind == ME_KIND_I8)
                        dot = _mm512_mul_ps(dot, _mm512_set1_ps(scale_at(
                                                     layout, first + c, shape->first_vector[t] + i)));
                    top = _mm512_max_ps(top, dot);
                }
            _mm512_store_ps(best + c * lanes + b, top);
        }
    for (int64_t q = 0; q < num_queries; q++)
        for (int64_t c = 0; c < count; c++) {
            float total = 0.0f;
            for (int64_t i = 0; i < r_q; i++) total += best[c * lanes + q * r_q + i];
            scores[q * stride + first + c] = total;
        }
}

/* Queries [0, num_queries) of `queries` against candidates [start, stop). */
ME_AMX_INLINE int score_queries(const float *queries, int64_t num_queries, int64_t r_q,
                                const Layout *layout, int64_t r_c, int64_t start, int64_t stop,
                                float *scores, int64_t stride, const int kind) {
    const int64_t dim = layout->dim, vectors = num_queries * r_q;
    const int64_t steps = (dim + 31) / 32, padded = steps * 32;
    const int64_t blocks = (vectors + 15) / 16, lanes = blocks * 16;
    int64_t unit = 16; /* candidates whose r_c vectors fill whole row tiles */
    while (unit > 1 && (unit / 2 * r_c) % 16 == 0) unit /= 2;
    const int64_t per_block =
        unit * (unit * r_c >= ME_BLOCK_ROWS ? 1 : ME_BLOCK_ROWS / (unit * r_c));
    const int64_t rows = per_block * r_c, tiles = rows / 16;
    BlockShape shape;
    memset(&shape, 0, sizeof shape);
    for (int64_t left = r_c, t = 0, row = 0, vector = 0; left > 0; t++) {
        shape.used[t] = layout->sizes[t] < left ? layout->sizes[t] : left;
        shape.first_row[t] = row;
        shape.first_vector[t] = vector;
        row += per_block * shape.used[t];
        vector += shape.used[t];
        left -= shape.used[t];
        shape.tiers = t + 1;
    }
    const size_t part_bytes = (size_t)(rows * padded * 2);
    const int64_t max_runs = shape.tiers + 2 * per_block * shape.tiers;
    uint16_t *query = aligned_alloc(64, (size_t)(blocks * steps * 2 * 1024));
    uint16_t *parts = aligned_alloc(64, 4 * part_bytes); /* two blocks' hi and lo */
    float *dots = aligned_alloc(64, (size_t)(rows * lanes * 4));
    float *best = aligned_alloc(64, (size_t)(per_block * lanes * 4));
    Run *runs = malloc((size_t)(2 * max_runs) * sizeof(Run));
    if (!query || !parts || !dots || !best || !runs) {
        free(query); free(parts); free(dots); free(best); free(runs);
        return -2;
    }
    memset(parts, 0, 4 * part_bytes); /* dims past `dim` stay zero */
    query_tiles(queries, vectors, dim, steps, query);
    Pipeline work;
    memset(&work, 0, sizeof work);
    work.runs = runs;
    work.later = runs + max_runs;
    work.rows = rows;
    work.dim = dim;
    work.padded = padded;
    work.row_bytes = dim * element_bytes_of(kind);
    uint16_t *current = parts, *next = parts + 2 * rows * padded;
    /* the first block, decoded before the loop */
    pipeline_start(&work, block_runs(layout, &shape, per_block, start, stop, 1, work.runs),
                   block_runs(layout, &shape, per_block, start + per_block, stop, 0, work.later),
                   current, current + rows * padded);
    advance(&work, 1, 1, kind);
    const int64_t total_steps = blocks * (tiles + 1) / 2 * steps;
    for (int64_t first = start; first < stop; first += per_block) {
        const int64_t count = stop - first < per_block ? stop - first : per_block;
        pipeline_start(
            &work, block_runs(layout, &shape, per_block, first + per_block, stop, 1, work.runs),
            block_runs(layout, &shape, per_block, first + 2 * per_block, stop, 0, work.later),
            next, next + rows * padded);
        int64_t step = 0;
        for (int64_t b = 0; b < blocks; b++)
            score_tiles(current, current + rows * padded, tiles, padded, steps,
                        query + b * steps * 1024, dots + b * 16, lanes, &work, &step,
                        total_steps, kind);
        advance(&work, 1, 1, kind);
        reduce_block(dots, layout, &shape, first, count, num_queries, r_q, lanes, best, scores,
                     stride, kind);
        uint16_t *swap = current;
        current = next;
        next = swap;
    }
    free(query); free(parts); free(dots); free(best); free(runs);
    return 0;
}

ME_AMX_TARGET int metaembed_score_range_amx(ME_RANGE_ARGS) {
    if (kind == ME_KIND_F32) return -3; /* _native.c sends float32 to the AVX-512 copy */
    TileConfig config;
    memset(&config, 0, sizeof config);
    config.palette = 1;
    for (int t = 0; t < 8; t++) {
        config.rows[t] = 16;
        config.bytes_per_row[t] = 64;
    }
    _tile_loadconfig(&config);
    /* whole queries per pass, their parts within ME_AMX_QUERY_BYTES */
    int64_t per_group = ME_AMX_QUERY_BYTES / (r_q * ((layout->dim + 31) / 32 * 32) * 4);
    if (per_group < 1) per_group = 1;
    int status = 0;
    for (int64_t first = 0; first < num_queries && status == 0; first += per_group) {
        const int64_t count = num_queries - first < per_group ? num_queries - first : per_group;
        const float *group = queries + first * r_q * layout->dim;
        float *out = scores + first * stride;
#define ME_AMX_CASE(K) \
    status = score_queries(group, count, r_q, layout, r_c, start, stop, out, stride, K);
        ME_DISPATCH_KIND(ME_AMX_CASE)
    }
    _tile_release();
    return status;
}

#else
int metaembed_amx_usable(void) { return 0; }
#ifdef ME_HAVE_AVX2
int metaembed_score_range_amx(ME_RANGE_ARGS) {
    (void)queries; (void)num_queries; (void)r_q; (void)layout; (void)r_c; (void)kind;
    (void)start; (void)stop; (void)scores; (void)stride;
    return -1;
}
#endif
#endif
