/*
 * metaembed native scoring kernel: budgeted MaxSim over tiered storage.
 *
 *   scores[q, n] = sum_{i < r_q} max_{j < r_c} <query[q, i], candidate[n, j]>
 *
 * x86-64 with AVX2, FMA and F16C (checked at run time by metaembed_native_supported);
 * every other platform builds a stub that reports itself unsupported, and the Python side
 * falls back to the numba or torch backend. Loaded with ctypes (the calls release the GIL);
 * the Python module object exists only so that setuptools can build and install this file.
 *
 * Two forms, chosen by r_c and M = num_queries * r_q, the query vectors of one call:
 *
 * - "dims along lanes" (M <= 8, the memory-bound budgets and one query up to (8, 16)): stored
 *   values are decoded eight at a time straight from the tier inside the dot product (no
 *   buffer) and horizontal sums close each tile. r_c = 1 with M <= 4: MB x 4 tiles whose
 *   four candidates come from four sub-ranges (more memory streams); r_c > 1 with M <= 2:
 *   MB x 4 tiles of one candidate's vectors; otherwise ("grouped"): groups of 4 query vectors
 *   x tiles of 3 candidate vectors (r_c = 1: the first vectors of 3 candidates), summed into
 *   one 4-lane vector per candidate vector so the max over candidate vectors is lane-wise,
 *   dims in blocks that keep the queries in L1. Except the sub-range form, they fetch the
 *   next tile's (or candidate's) rows ahead while they compute;
 * - "query vectors along lanes" (everything else: batches, r_q = 16): the queries are
 *   transposed once per call into blocks of 8 vectors, (dims, 8) each; each candidate's r_c
 *   vectors are decoded into packed tiles of JB rows, (dims/8, JB, 8), and 2x4 or 1x8 tiles
 *   of 8-lane accumulators are updated with one broadcast candidate value per FMA (an outer
 *   product: no horizontal sums, and the max over candidate vectors is a lane-wise max). The
 *   next candidate is packed inside the micro-kernel loop and the one after is prefetched;
 *   per-lane results are staged and written out through 8x8 transposes.
 *
 * A candidate vector tile that runs past r_c repeats the last vector (a repeated vector
 * cannot change a max); with r_c = 1, several candidates fill a tile instead (from separate
 * sub-ranges in the first form, consecutive in the second). Measurements behind each choice:
 * docs/index.md.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ME_MAX_TIERS 8
#define ME_KIND_F32 0
#define ME_KIND_F16 1
#define ME_KIND_BF16 2
#define ME_KIND_I8 3
#define ME_LANES 8
#ifndef ME_GROUPED_MAX
#define ME_GROUPED_MAX 8 /* query vectors up to which r_c > 1 runs in the grouped form */
#endif
#ifndef ME_DIM_BLOCK
#define ME_DIM_BLOCK 256 /* dims per pass of the grouped form */
#endif
#define ME_STAGE 64 /* candidates whose scores are staged before being written out */
#define ME_QUERY_GROUP_BYTES (128 * 1024) /* transposed query floats kept hot per pass */

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define ME_HAVE_AVX2 1
#include <immintrin.h>
#define ME_TARGET __attribute__((target("avx2,fma,f16c")))
#define ME_INLINE static inline __attribute__((always_inline)) ME_TARGET
#endif

#if defined(ME_HAVE_AVX2) && !defined(_WIN32)
#include <pthread.h>
#define ME_HAVE_THREADS 1
#endif

#if defined(_WIN32)
#define ME_EXPORT __declspec(dllexport)
#else
#define ME_EXPORT __attribute__((visibility("default")))
#endif

ME_EXPORT int metaembed_native_supported(void) {
#ifdef ME_HAVE_AVX2
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
#else
    return 0;
#endif
}

#ifdef ME_HAVE_AVX2

/* Where candidate vector j lives: tier and position inside the tier. */
typedef struct {
    const char *base[ME_MAX_TIERS];
    const float *scales[ME_MAX_TIERS];
    int64_t sizes[ME_MAX_TIERS];
    int64_t element_bytes;
    int64_t dim;
    int64_t *tier_of;  /* (r_c,) */
    int64_t *index_of; /* (r_c,) */
} Layout;

static inline const void *vector_at(const Layout *layout, int64_t n, int64_t j) {
    int64_t t = layout->tier_of[j];
    int64_t row = n * layout->sizes[t] + layout->index_of[j];
    return layout->base[t] + row * layout->dim * layout->element_bytes;
}

static inline float scale_at(const Layout *layout, int64_t n, int64_t j) {
    int64_t t = layout->tier_of[j];
    return layout->scales[t][n * layout->sizes[t] + layout->index_of[j]];
}

/* Eight stored values from offset d, as float32 (int8 without its scale). */
ME_INLINE __m256 load8(const void *vector, int64_t d, const int kind) {
    if (kind == ME_KIND_F32) return _mm256_loadu_ps((const float *)vector + d);
    if (kind == ME_KIND_F16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)vector + d)));
    if (kind == ME_KIND_BF16) {
        __m128i bits = _mm_loadu_si128((const __m128i *)((const uint16_t *)vector + d));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
    }
    __m128i bytes = _mm_loadl_epi64((const __m128i *)((const int8_t *)vector + d));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
}

ME_INLINE float load1(const void *vector, int64_t d, const int kind) {
    if (kind == ME_KIND_F32) return ((const float *)vector)[d];
    if (kind == ME_KIND_F16) return _cvtsh_ss(((const uint16_t *)vector)[d]);
    if (kind == ME_KIND_BF16) {
        uint32_t bits = (uint32_t)((const uint16_t *)vector)[d] << 16;
        float value;
        memcpy(&value, &bits, sizeof value);
        return value;
    }
    return (float)((const int8_t *)vector)[d];
}

/* Bytes per stored value. */
ME_INLINE int element_bytes_of(const int kind) {
    return kind == ME_KIND_F32 ? 4 : kind == ME_KIND_I8 ? 1 : 2;
}

/* At each cache line of the rows (offset d values), fetch the same line of the `ahead` rows. */
ME_INLINE void fetch_ahead(const char *const *ahead, int64_t d, const int JB, const int kind) {
    const int element_bytes = element_bytes_of(kind);
    if (ahead && (d * element_bytes) % 64 == 0)
        for (int jj = 0; jj < JB; jj++) _mm_prefetch(ahead[jj] + d * element_bytes, _MM_HINT_T0);
}

/* (sum a, sum b, sum c, sum d) of four 8-lane accumulators. */
ME_INLINE __m128 sum4(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 pairs = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(pairs), _mm256_extractf128_ps(pairs, 1));
}

/* ---------------------------------------------------------------- dims along lanes */

/* dots[m * JB + jj] = <queries[m], vectors[jj]> (raw stored values) for m < MB, jj < JB. */
ME_INLINE void dot_tile(const float *queries, int64_t dim, const void *const *vectors,
                        const char *const *ahead, float *dots, const int MB, const int JB,
                        const int kind) {
    __m256 acc[16]; /* acc[m * JB + jj] */
    for (int i = 0; i < MB * JB; i++) acc[i] = _mm256_setzero_ps();
    int64_t d = 0;
    for (; d + ME_LANES <= dim; d += ME_LANES) {
        fetch_ahead(ahead, d, JB, kind);
        __m256 values[4];
        for (int jj = 0; jj < JB; jj++) values[jj] = load8(vectors[jj], d, kind);
        for (int m = 0; m < MB; m++) {
            __m256 query = _mm256_loadu_ps(queries + m * dim + d);
            for (int jj = 0; jj < JB; jj++)
                acc[m * JB + jj] = _mm256_fmadd_ps(query, values[jj], acc[m * JB + jj]);
        }
    }
    /* MB * JB is a multiple of 4 for every tile shape used below */
    for (int i = 0; i < MB * JB; i += 4)
        _mm_storeu_ps(dots + i, sum4(acc[i], acc[i + 1], acc[i + 2], acc[i + 3]));
    for (; d < dim; d++) /* dims beyond the last multiple of 8 */
        for (int jj = 0; jj < JB; jj++) {
            float value = load1(vectors[jj], d, kind);
            for (int m = 0; m < MB; m++) dots[m * JB + jj] += queries[m * dim + d] * value;
        }
}

ME_INLINE void score_first_vectors(const float *queries, int64_t num_queries, int64_t r_q,
                                   const Layout *layout, int64_t start, int64_t stop,
                                   float *scores, int64_t stride, const int MB, const int JB,
                                   const int kind) {
    /* a tile holds the first vectors of JB candidates, one from each of JB equal sub-ranges:
       JB concurrent streams per thread read faster than one (measured with a plain float16
       sum on this machine: 26 GB/s with one stream, 31 with four) */
    const int64_t dim = layout->dim;
    const void *vectors[4];
    float dots[16];
    const int64_t sub = (stop - start) / JB;
    for (int64_t i = 0; i < stop - start; i += (i < sub * JB ? JB : 1)) {
        int64_t candidate[4];
        const int spread = i < sub * JB;
        for (int jj = 0; jj < JB; jj++) {
            int64_t n = spread ? start + jj * sub + i / JB : start + i;
            candidate[jj] = n;
            vectors[jj] = vector_at(layout, n, 0);
        }
        dot_tile(queries, dim, vectors, NULL, dots, MB, JB, kind);
        for (int jj = 0; jj < (spread ? JB : 1); jj++) {
            const int64_t n = candidate[jj];
            float scale = kind == ME_KIND_I8 ? scale_at(layout, n, 0) : 1.0f;
            for (int64_t q = 0; q < num_queries; q++) {
                float total = 0.0f;
                for (int64_t i2 = 0; i2 < r_q; i2++) total += dots[(q * r_q + i2) * JB + jj];
                scores[q * stride + n] = total * scale;
            }
        }
    }
}

/* scores[q][n] = sum over the query's vectors of best[q * r_q + i]. */
ME_INLINE void write_sums(const float *best, int64_t num_queries, int64_t r_q, float *scores,
                          int64_t stride, int64_t n) {
    for (int64_t q = 0; q < num_queries; q++) {
        float total = 0.0f;
        for (int64_t i = 0; i < r_q; i++) total += best[q * r_q + i];
        scores[q * stride + n] = total;
    }
}

/* r_c > 1 with one or two query vectors: MB x 4 tiles, the same rows of the next candidate
   fetched ahead. */
ME_INLINE void score_few_vectors(const float *queries, int64_t num_queries, int64_t r_q,
                                 const Layout *layout, int64_t r_c, int64_t start, int64_t stop,
                                 float *scores, int64_t stride, const int MB, const int kind) {
    const int64_t dim = layout->dim;
    const void *vectors[4];
    const char *ahead[4];
    float dots[8], best[2];
    for (int64_t n = start; n < stop; n++) {
        const int64_t next = n + 1 < stop ? n + 1 : n;
        for (int m = 0; m < MB; m++) best[m] = -INFINITY;
        for (int64_t j = 0; j < r_c; j += 4) {
            float scale[4];
            for (int jj = 0; jj < 4; jj++) {
                int64_t vector = j + jj < r_c ? j + jj : r_c - 1;
                vectors[jj] = vector_at(layout, n, vector);
                ahead[jj] = vector_at(layout, next, vector);
                scale[jj] = kind == ME_KIND_I8 ? scale_at(layout, n, vector) : 1.0f;
            }
            dot_tile(queries, dim, vectors, ahead, dots, MB, 4, kind);
            for (int m = 0; m < MB; m++)
                for (int jj = 0; jj < 4; jj++) {
                    float dot = dots[m * 4 + jj] * scale[jj];
                    best[m] = dot > best[m] ? dot : best[m];
                }
        }
        write_sums(best, num_queries, r_q, scores, stride, n);
    }
}

/*
 * r_c > 1 with up to 8 query vectors: groups of 4 query vectors (zero-padded) against tiles of
 * up to 3 candidate vectors, 12 accumulators with the dims along the lanes; each tile's
 * stored values are decoded once per group straight from the tier (no packing), its 4 x 3
 * dots summed across lanes into one 4-lane vector per candidate vector, so the max over
 * candidate vectors is lane-wise. Dims run in blocks of ME_DIM_BLOCK so that the query
 * block a tile reads stays in L1; the rows of the tile after this one are fetched ahead
 * while the first group runs.
 */

/* dots[jj] (+)= <queries[m], vectors[jj]> over dims [begin, end), m < 4, lanes = m. */
ME_INLINE void group_dots(const float *queries, int64_t dim, int64_t begin, int64_t end,
                          const void *const *vectors, const char *const *ahead, __m128 *dots,
                          const int JB, const int kind) {
    __m256 acc[12]; /* acc[jj * 4 + m], (8 dims) each */
    for (int i = 0; i < 4 * JB; i++) acc[i] = _mm256_setzero_ps();
    for (int64_t d = begin; d < end; d += ME_LANES) {
        fetch_ahead(ahead, d, JB, kind);
        __m256 values[3];
        for (int jj = 0; jj < JB; jj++) values[jj] = load8(vectors[jj], d, kind);
        for (int m = 0; m < 4; m++) {
            __m256 query = _mm256_loadu_ps(queries + m * dim + d);
            for (int jj = 0; jj < JB; jj++)
                acc[jj * 4 + m] = _mm256_fmadd_ps(query, values[jj], acc[jj * 4 + m]);
        }
    }
    for (int jj = 0; jj < JB; jj++) {
        __m128 sums = sum4(acc[jj * 4], acc[jj * 4 + 1], acc[jj * 4 + 2], acc[jj * 4 + 3]);
        dots[jj] = begin == 0 ? sums : _mm_add_ps(dots[jj], sums);
    }
}

/* dots[g][jj] = <query vectors 4g .. 4g + 3, rows[jj]> (4 lanes), fetching `ahead` rows. */
ME_INLINE void grouped_dots(const float *padded, int64_t dim, const void *const *rows,
                            const char *const *ahead, __m128 dots[2][3], const int G,
                            const int JB, const int kind) {
    const int64_t full = dim / ME_LANES * ME_LANES;
    for (int g = 0; g < G; g++)
        for (int jj = 0; jj < JB; jj++) dots[g][jj] = _mm_setzero_ps();
    for (int64_t begin = 0; begin < full; begin += ME_DIM_BLOCK) {
        int64_t end = begin + ME_DIM_BLOCK < full ? begin + ME_DIM_BLOCK : full;
        for (int g = 0; g < G; g++)
            group_dots(padded + g * 4 * dim, dim, begin, end, rows, g == 0 ? ahead : NULL,
                       dots[g], JB, kind);
    }
    if (full < dim) { /* dims beyond the last multiple of 8 */
        float tail[2][3][4] = {{{0}}};
        for (int64_t d = full; d < dim; d++)
            for (int jj = 0; jj < JB; jj++) {
                float value = load1(rows[jj], d, kind);
                for (int m = 0; m < 4 * G; m++)
                    tail[m / 4][jj][m % 4] += padded[m * dim + d] * value;
            }
        for (int g = 0; g < G; g++)
            for (int jj = 0; jj < JB; jj++)
                dots[g][jj] = _mm_add_ps(dots[g][jj], _mm_loadu_ps(tail[g][jj]));
    }
}

/* top[g] = max(top[g], dots of group g with candidate vectors rows[0 .. JB)). */
ME_INLINE void grouped_tile(const float *padded, int64_t dim, const void *const *rows,
                            const float *scales, __m128 *top, const int G, const int JB,
                            const int kind) {
    __m128 dots[2][3]; /* (group, candidate vector), 4 query lanes */
    grouped_dots(padded, dim, rows, (const char *const *)rows + JB, dots, G, JB, kind);
    for (int jj = 0; jj < JB; jj++)
        for (int g = 0; g < G; g++) {
            __m128 dot = kind == ME_KIND_I8 ? _mm_mul_ps(dots[g][jj], _mm_set1_ps(scales[jj]))
                                            : dots[g][jj];
            top[g] = _mm_max_ps(top[g], dot);
        }
}

/* r_c = 1 with 5 to 8 query vectors: tiles of the first vectors of 3 consecutive candidates. */
ME_INLINE void score_grouped_first(const float *padded, int64_t num_queries, int64_t r_q,
                                   const Layout *layout, int64_t start, int64_t stop,
                                   float *scores, int64_t stride, const int JB, const int kind) {
    const int64_t dim = layout->dim;
    for (int64_t n = start; n + JB <= stop; n += JB) {
        const void *rows[3];
        const char *ahead[3];
        __m128 dots[2][3];
        for (int jj = 0; jj < JB; jj++) {
            rows[jj] = vector_at(layout, n + jj, 0);
            ahead[jj] = vector_at(layout, n + JB + jj < stop ? n + JB + jj : stop - 1, 0);
        }
        grouped_dots(padded, dim, rows, ahead, dots, 2, JB, kind);
        for (int jj = 0; jj < JB; jj++) {
            __m128 scale = _mm_set1_ps(kind == ME_KIND_I8 ? scale_at(layout, n + jj, 0) : 1.0f);
            float best[8];
            _mm_storeu_ps(best, _mm_mul_ps(dots[0][jj], scale));
            _mm_storeu_ps(best + 4, _mm_mul_ps(dots[1][jj], scale));
            write_sums(best, num_queries, r_q, scores, stride, n + jj);
        }
    }
}

/*
 * padded: (4 * G, dim) query vectors, zero past the real ones. rows: room for 2 * r_c + 3
 * pointers (this candidate's vectors, the next candidate's, and slack for the last tile's
 * fetch-ahead); scales: room for r_c floats.
 */
ME_INLINE void score_grouped(const float *padded, int64_t num_queries, int64_t r_q,
                             const Layout *layout, int64_t r_c, int64_t start, int64_t stop,
                             float *scores, int64_t stride, const void **rows, float *scales,
                             const int G, const int kind) {
    const int64_t dim = layout->dim;
    for (int64_t j = 0; j < r_c; j++) rows[r_c + j] = vector_at(layout, start, j);
    for (int64_t n = start; n < stop; n++) {
        const int64_t next = n + 1 < stop ? n + 1 : n;
        for (int64_t j = 0; j < r_c; j++) {
            rows[j] = rows[r_c + j];
            rows[r_c + j] = vector_at(layout, next, j);
            if (kind == ME_KIND_I8) scales[j] = scale_at(layout, n, j);
        }
        for (int64_t j = 2 * r_c; j < 2 * r_c + 3; j++) rows[j] = rows[2 * r_c - 1];
        __m128 top[2] = {_mm_set1_ps(-INFINITY), _mm_set1_ps(-INFINITY)};
        int64_t j = 0;
        for (; j + 3 <= r_c; j += 3)
            grouped_tile(padded, dim, rows + j, scales + j, top, G, 3, kind);
        if (r_c - j == 2) grouped_tile(padded, dim, rows + j, scales + j, top, G, 2, kind);
        if (r_c - j == 1) grouped_tile(padded, dim, rows + j, scales + j, top, G, 1, kind);
        float best[8];
        _mm_storeu_ps(best, top[0]);
        _mm_storeu_ps(best + 4, top[1]);
        write_sums(best, num_queries, r_q, scores, stride, n);
    }
}

#define ME_GROUPED_COPY(G, K)                                                                   \
    __attribute__((noinline)) ME_TARGET static void score_grouped_g##G##_k##K(                   \
        const float *padded, int64_t num_queries, int64_t r_q, const Layout *layout,             \
        int64_t r_c, int64_t start, int64_t stop, float *scores, int64_t stride,                 \
        const void **rows, float *scales) {                                                      \
        score_grouped(padded, num_queries, r_q, layout, r_c, start, stop, scores, stride, rows,  \
                      scales, G, K);                                                             \
    }
ME_GROUPED_COPY(1, 0) ME_GROUPED_COPY(1, 1) ME_GROUPED_COPY(1, 2) ME_GROUPED_COPY(1, 3)
ME_GROUPED_COPY(2, 0) ME_GROUPED_COPY(2, 1) ME_GROUPED_COPY(2, 2) ME_GROUPED_COPY(2, 3)
#define ME_GROUPED_FIRST_COPY(K)                                                                \
    __attribute__((noinline)) ME_TARGET static void score_grouped_first_k##K(                    \
        const float *padded, int64_t num_queries, int64_t r_q, const Layout *layout,             \
        int64_t start, int64_t stop, float *scores, int64_t stride) {                            \
        const int64_t whole = start + (stop - start) / 3 * 3; /* then a tile of 1 or 2 */        \
        const int rest = (int)(stop - whole);                                                    \
        score_grouped_first(padded, num_queries, r_q, layout, start, whole, scores, stride, 3,   \
                            K);                                                                  \
        if (rest == 2)                                                                           \
            score_grouped_first(padded, num_queries, r_q, layout, whole, stop, scores, stride,   \
                                2, K);                                                           \
        if (rest == 1)                                                                           \
            score_grouped_first(padded, num_queries, r_q, layout, whole, stop, scores, stride,   \
                                1, K);                                                           \
    }
ME_GROUPED_FIRST_COPY(0) ME_GROUPED_FIRST_COPY(1) ME_GROUPED_FIRST_COPY(2) ME_GROUPED_FIRST_COPY(3)

/* ------------------------------------------------------- query vectors along lanes */

/*
 * Packed candidate rows, as in the packed operand of a GEMM: a tile of JB rows is stored as
 * (chunks of 8 dims, JB, 8), so the JB values of one dimension sit at constant offsets from
 * one pointer. Dims past `dim` are zero (the transposed queries are zero there too).
 *
 * A "unit" is what one pass of tiles scores: one candidate (r_c > 1, ceil(r_c / JB) tiles of
 * its vectors) or JB consecutive candidates (r_c = 1, one tile of their first vectors). The
 * next unit is packed while the current one is scored: each micro-kernel call packs one
 * chunk of the next unit's tile per chunk it computes, so the stores and conversions run
 * beside the FMAs instead of in a phase of their own (measured: packing in a separate phase
 * cost a third of the time at one query, budget (8, 16)).
 */
typedef struct {
    const void *rows[8];  /* stored rows of the tile */
    float scales[8];      /* int8 scales, else 1 */
    float *target;        /* packed tile, (chunks, JB, 8) */
    const char *ahead[8]; /* the same rows one unit later, fetched into the cache, or NULL */
} PackJob;

ME_INLINE const void *tile_row(const Layout *layout, int64_t r_c, int64_t start, int64_t stop,
                               int64_t unit, int64_t t, int jj, float *scale, const int JB,
                               const int kind) {
    int64_t candidate = start + unit, vector = t * JB + jj;
    if (r_c == 1) {
        candidate = start + unit * JB + jj < stop ? start + unit * JB + jj : stop - 1;
        vector = 0;
    } else if (vector >= r_c) {
        vector = r_c - 1;
    }
    if (scale) *scale = kind == ME_KIND_I8 ? scale_at(layout, candidate, vector) : 1.0f;
    return vector_at(layout, candidate, vector);
}

/*
 * Rows of tile t of unit `unit` (rows past the end repeat the last: a repeat cannot change a
 * max), and the rows of the unit after it, to fetch ahead while this one is packed.
 */
ME_INLINE void plan_tile(const Layout *layout, int64_t r_c, int64_t start, int64_t stop,
                         int64_t units, int64_t unit, int64_t t, float *target, PackJob *job,
                         const int JB, const int kind) {
    for (int jj = 0; jj < JB; jj++) {
        job->rows[jj] = tile_row(layout, r_c, start, stop, unit, t, jj, &job->scales[jj], JB, kind);
        job->ahead[jj] = unit + 1 < units
                             ? tile_row(layout, r_c, start, stop, unit + 1, t, jj, NULL, JB, kind)
                             : NULL;
    }
    job->target = target;
}

/* Pack full chunk c (dims 8c .. 8c + 7) of the job's rows. */
ME_INLINE void pack_chunk(const PackJob *__restrict job, float *__restrict target, int64_t c,
                          const int JB, const int kind) {
    const int element_bytes = element_bytes_of(kind);
    const int64_t chunks_per_line = 64 / (ME_LANES * element_bytes);
    if (job->ahead[0] && c % chunks_per_line == 0)
        for (int jj = 0; jj < JB; jj++)
            _mm_prefetch(job->ahead[jj] + c * ME_LANES * element_bytes, _MM_HINT_T0);
    for (int jj = 0; jj < JB; jj++) {
        __m256 values = load8(job->rows[jj], c * ME_LANES, kind);
        if (kind == ME_KIND_I8) values = _mm256_mul_ps(values, _mm256_set1_ps(job->scales[jj]));
        _mm256_store_ps(target + (c * JB + jj) * ME_LANES, values);
    }
}

/* Pack the dims after the last full chunk, zero beyond `dim`. */
ME_INLINE void pack_tail(const PackJob *job, int64_t dim, const int JB, const int kind) {
    const int64_t full = dim / ME_LANES;
    if (full * ME_LANES == dim) return;
    for (int jj = 0; jj < JB; jj++) {
        float *target = job->target + (full * JB + jj) * ME_LANES;
        for (int k = 0; k < ME_LANES; k++) {
            int64_t d = full * ME_LANES + k;
            target[k] = d < dim ? load1(job->rows[jj], d, kind) * job->scales[jj] : 0.0f;
        }
    }
}

ME_INLINE void pack_tile(const PackJob *job, int64_t dim, const int JB, const int kind) {
    for (int64_t c = 0; c < dim / ME_LANES; c++) pack_chunk(job, job->target, c, JB, kind);
    pack_tail(job, dim, JB, kind);
}

/*
 * Micro-kernels: a QB x JB tile of 8-lane accumulators, each candidate value broadcast once
 * per dimension, written with named accumulators (an array of them was kept in memory by the
 * compiler). With `sims` NULL, top[b] = max(top[b], max_jj acc[b][jj]); otherwise acc[b][jj]
 * is stored at sims + jj * lanes + b * 8 (r_c = 1: the JB rows are JB candidates). `job`, when
 * not NULL, is the next unit's tile, packed alongside.
 */
#define ME_ZERO _mm256_setzero_ps()
#define ME_FMA(acc, query, values, jj, k) \
    acc = _mm256_fmadd_ps(query, _mm256_broadcast_ss((values) + (jj) * ME_LANES + (k)), acc)
#define ME_MAX4(a, b, c, d) _mm256_max_ps(_mm256_max_ps(a, b), _mm256_max_ps(c, d))
#define ME_PACK_ALONGSIDE(JB)                                             \
    if (job && c < full) pack_chunk(job, target, c, JB, kind)
#define ME_TILE_ARGS                                                                          \
    const float *transposed, int64_t block_stride, int64_t dim, const float *tile, __m256 *top, \
        float *sims, int64_t lanes, const PackJob *__restrict job

ME_INLINE void tile_1x8(ME_TILE_ARGS, const int kind) {
    const int64_t chunks = (dim + ME_LANES - 1) / ME_LANES, full = dim / ME_LANES;
    float *__restrict target = job ? job->target : NULL;
    __m256 a0 = ME_ZERO, a1 = ME_ZERO, a2 = ME_ZERO, a3 = ME_ZERO;
    __m256 a4 = ME_ZERO, a5 = ME_ZERO, a6 = ME_ZERO, a7 = ME_ZERO;
    (void)block_stride;
    for (int64_t c = 0; c < chunks; c++) {
        const float *values = tile + c * 8 * ME_LANES;
        const float *queries = transposed + c * ME_LANES * ME_LANES;
        ME_PACK_ALONGSIDE(8);
        for (int k = 0; k < ME_LANES; k++) {
            __m256 q = _mm256_load_ps(queries + k * ME_LANES);
            ME_FMA(a0, q, values, 0, k); ME_FMA(a1, q, values, 1, k);
            ME_FMA(a2, q, values, 2, k); ME_FMA(a3, q, values, 3, k);
            ME_FMA(a4, q, values, 4, k); ME_FMA(a5, q, values, 5, k);
            ME_FMA(a6, q, values, 6, k); ME_FMA(a7, q, values, 7, k);
        }
    }
    if (job) pack_tail(job, dim, 8, kind);
    if (!sims) {
        __m256 low = ME_MAX4(a0, a1, a2, a3), high = ME_MAX4(a4, a5, a6, a7);
        top[0] = _mm256_max_ps(top[0], _mm256_max_ps(low, high));
        return;
    }
    _mm256_storeu_ps(sims, a0);
    _mm256_storeu_ps(sims + lanes, a1);
    _mm256_storeu_ps(sims + 2 * lanes, a2);
    _mm256_storeu_ps(sims + 3 * lanes, a3);
    _mm256_storeu_ps(sims + 4 * lanes, a4);
    _mm256_storeu_ps(sims + 5 * lanes, a5);
    _mm256_storeu_ps(sims + 6 * lanes, a6);
    _mm256_storeu_ps(sims + 7 * lanes, a7);
}

ME_INLINE void tile_1x4(ME_TILE_ARGS, const int kind) {
    const int64_t chunks = (dim + ME_LANES - 1) / ME_LANES, full = dim / ME_LANES;
    float *__restrict target = job ? job->target : NULL;
    __m256 a0 = ME_ZERO, a1 = ME_ZERO, a2 = ME_ZERO, a3 = ME_ZERO;
    (void)block_stride;
    for (int64_t c = 0; c < chunks; c++) {
        const float *values = tile + c * 4 * ME_LANES;
        const float *queries = transposed + c * ME_LANES * ME_LANES;
        ME_PACK_ALONGSIDE(4);
        for (int k = 0; k < ME_LANES; k++) {
            __m256 q = _mm256_load_ps(queries + k * ME_LANES);
            ME_FMA(a0, q, values, 0, k); ME_FMA(a1, q, values, 1, k);
            ME_FMA(a2, q, values, 2, k); ME_FMA(a3, q, values, 3, k);
        }
    }
    if (job) pack_tail(job, dim, 4, kind);
    if (!sims) {
        top[0] = _mm256_max_ps(top[0], ME_MAX4(a0, a1, a2, a3));
        return;
    }
    _mm256_storeu_ps(sims, a0);
    _mm256_storeu_ps(sims + lanes, a1);
    _mm256_storeu_ps(sims + 2 * lanes, a2);
    _mm256_storeu_ps(sims + 3 * lanes, a3);
}

ME_INLINE void tile_2x4(ME_TILE_ARGS, const int kind) {
    const int64_t chunks = (dim + ME_LANES - 1) / ME_LANES, full = dim / ME_LANES;
    float *__restrict target = job ? job->target : NULL;
    __m256 a0 = ME_ZERO, a1 = ME_ZERO, a2 = ME_ZERO, a3 = ME_ZERO; /* query block 0 */
    __m256 b0 = ME_ZERO, b1 = ME_ZERO, b2 = ME_ZERO, b3 = ME_ZERO; /* query block 1 */
    for (int64_t c = 0; c < chunks; c++) {
        const float *values = tile + c * 4 * ME_LANES;
        const float *queries = transposed + c * ME_LANES * ME_LANES;
        ME_PACK_ALONGSIDE(4);
        for (int k = 0; k < ME_LANES; k++) {
            __m256 q = _mm256_load_ps(queries + k * ME_LANES);
            __m256 r = _mm256_load_ps(queries + block_stride + k * ME_LANES);
            __m256 v0 = _mm256_broadcast_ss(values + k);
            __m256 v1 = _mm256_broadcast_ss(values + ME_LANES + k);
            __m256 v2 = _mm256_broadcast_ss(values + 2 * ME_LANES + k);
            __m256 v3 = _mm256_broadcast_ss(values + 3 * ME_LANES + k);
            a0 = _mm256_fmadd_ps(q, v0, a0);
            b0 = _mm256_fmadd_ps(r, v0, b0);
            a1 = _mm256_fmadd_ps(q, v1, a1);
            b1 = _mm256_fmadd_ps(r, v1, b1);
            a2 = _mm256_fmadd_ps(q, v2, a2);
            b2 = _mm256_fmadd_ps(r, v2, b2);
            a3 = _mm256_fmadd_ps(q, v3, a3);
            b3 = _mm256_fmadd_ps(r, v3, b3);
        }
    }
    if (job) pack_tail(job, dim, 4, kind);
    if (!sims) {
        top[0] = _mm256_max_ps(top[0], ME_MAX4(a0, a1, a2, a3));
        top[1] = _mm256_max_ps(top[1], ME_MAX4(b0, b1, b2, b3));
        return;
    }
    _mm256_storeu_ps(sims, a0);
    _mm256_storeu_ps(sims + ME_LANES, b0);
    _mm256_storeu_ps(sims + lanes, a1);
    _mm256_storeu_ps(sims + lanes + ME_LANES, b1);
    _mm256_storeu_ps(sims + 2 * lanes, a2);
    _mm256_storeu_ps(sims + 2 * lanes + ME_LANES, b2);
    _mm256_storeu_ps(sims + 3 * lanes, a3);
    _mm256_storeu_ps(sims + 3 * lanes + ME_LANES, b3);
}

/* One compiled copy per (shape, storage kind): the hot loop gets every register to itself. */
#define ME_TILE_COPY(SHAPE, K)                                                             \
    __attribute__((noinline)) ME_TARGET static void SHAPE##_k##K(ME_TILE_ARGS) {           \
        SHAPE(transposed, block_stride, dim, tile, top, sims, lanes, job, K);              \
    }
#define ME_TILE_COPIES(SHAPE) \
    ME_TILE_COPY(SHAPE, 0) ME_TILE_COPY(SHAPE, 1) ME_TILE_COPY(SHAPE, 2) ME_TILE_COPY(SHAPE, 3)
ME_TILE_COPIES(tile_1x8)
ME_TILE_COPIES(tile_1x4)
ME_TILE_COPIES(tile_2x4)

#define ME_PICK(SHAPE)                                                       \
    (kind == 0 ? SHAPE##_k0 : kind == 1 ? SHAPE##_k1 : kind == 2 ? SHAPE##_k2 : SHAPE##_k3)

/*
 * scores[q][c] = staged[c * lanes + first_lane + q] for 8 queries and `count` candidates:
 * 8 x 8 blocks transposed in registers, then stored as whole rows of candidates.
 */
ME_INLINE void write_transposed(const float *staged, int64_t lanes, int64_t first_lane,
                                int64_t count, float *scores, int64_t stride) {
    int64_t c = 0;
    for (; c + ME_LANES <= count; c += ME_LANES) {
        __m256 r[8], t[8], u[8];
        for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(staged + (c + i) * lanes + first_lane);
        for (int i = 0; i < 8; i += 2) {
            t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
        }
        for (int i = 0; i < 8; i += 4) {
            u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
            u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
            u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
            u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
        }
        for (int i = 0; i < 4; i++) {
            _mm256_storeu_ps(scores + i * stride + c, _mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
            _mm256_storeu_ps(scores + (i + 4) * stride + c,
                             _mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
        }
    }
    for (; c < count; c++)
        for (int q = 0; q < ME_LANES; q++)
            scores[q * stride + c] = staged[c * lanes + first_lane + q];
}

/*
 * Scores of queries [first_query, first_query + group_queries) for candidates [start, stop).
 * JB = 8 with a single 8-lane block of query vectors (1 x 8 tiles), else 4 (2 x 4 tiles for
 * pairs of blocks, 1 x 4 for an odd last block). packed: two units' worth of packed tiles.
 */
ME_INLINE void score_group(const float *queries, int64_t first_query, int64_t group_queries,
                           int64_t r_q, const Layout *layout, int64_t r_c, int64_t start,
                           int64_t stop, float *scores, int64_t stride, float *transposed,
                           float *packed, float *staged, const int JB, const int kind) {
    const int64_t dim = layout->dim;
    const int64_t chunks = (dim + ME_LANES - 1) / ME_LANES;
    const int64_t block_stride = chunks * ME_LANES * ME_LANES;
    const int64_t vectors = group_queries * r_q;
    const int64_t blocks = (vectors + ME_LANES - 1) / ME_LANES;
    const int64_t lanes = blocks * ME_LANES;
    const int64_t tile_floats = chunks * JB * ME_LANES;
    const int64_t units = r_c == 1 ? (stop - start + JB - 1) / JB : stop - start;
    const int64_t tiles = r_c == 1 ? 1 : (r_c + JB - 1) / JB;
    const float *group = queries + first_query * r_q * dim;
    for (int64_t b = 0; b < blocks; b++) /* (blocks, chunks * 8, 8), zero-padded */
        for (int64_t d = 0; d < chunks * ME_LANES; d++)
            for (int64_t lane = 0; lane < ME_LANES; lane++) {
                int64_t m = b * ME_LANES + lane;
                transposed[b * block_stride + d * ME_LANES + lane] =
                    m < vectors && d < dim ? group[m * dim + d] : 0.0f;
            }
    float *current = packed, *next = packed + tiles * tile_floats;
    int64_t staged_first = start; /* first candidate held in `staged` */
    PackJob job;
    for (int64_t t = 0; t < tiles; t++) {
        plan_tile(layout, r_c, start, stop, units, 0, t, current + t * tile_floats, &job, JB,
                  kind);
        pack_tile(&job, dim, JB, kind);
    }
    for (int64_t unit = 0; unit < units; unit++) {
        /* per-lane values (max over candidate vectors, or the dot with the first vector) go to
           a staging block (candidates, lanes) and are summed over r_q and written out row by
           row every ME_STAGE candidates: reading lanes back right after the vector stores that
           wrote them stalled on store forwarding and cost as much as the FMAs at (1, 1) */
        float *lane_values =
            staged + ((r_c == 1 ? start + unit * JB : start + unit) - staged_first) * lanes;
        for (int64_t b = 0; b < blocks;) {
            const int pair = JB == 4 && blocks - b >= 2;
            __m256 top[2] = {_mm256_set1_ps(-INFINITY), _mm256_set1_ps(-INFINITY)};
            for (int64_t t = 0; t < tiles; t++) {
                const PackJob *alongside = NULL;
                if (b == 0 && unit + 1 < units) {
                    plan_tile(layout, r_c, start, stop, units, unit + 1, t,
                              next + t * tile_floats, &job, JB, kind);
                    alongside = &job;
                }
                float *out = r_c == 1 ? lane_values + b * ME_LANES : NULL;
                const float *query = transposed + b * block_stride;
                const float *tile = current + t * tile_floats;
                if (pair)
                    ME_PICK(tile_2x4)(query, block_stride, dim, tile, top, out, lanes, alongside);
                else if (JB == 8)
                    ME_PICK(tile_1x8)(query, block_stride, dim, tile, top, out, lanes, alongside);
                else
                    ME_PICK(tile_1x4)(query, block_stride, dim, tile, top, out, lanes, alongside);
            }
            if (r_c > 1) {
                _mm256_storeu_ps(lane_values + b * ME_LANES, top[0]);
                if (pair) _mm256_storeu_ps(lane_values + (b + 1) * ME_LANES, top[1]);
            }
            b += pair ? 2 : 1;
        }
        const int64_t done = r_c == 1 ? start + (unit + 1) * JB : start + unit + 1;
        if (done - staged_first >= ME_STAGE || unit + 1 == units) {
            const int64_t count = (done < stop ? done : stop) - staged_first;
            int64_t q = 0;
            if (r_q == 1) /* lanes are queries: 8 x 8 transposes, then whole-vector stores */
                for (; q + ME_LANES <= group_queries; q += ME_LANES)
                    write_transposed(staged, lanes, q, count,
                                     scores + (first_query + q) * stride + staged_first, stride);
            for (; q < group_queries; q++) {
                float *row = scores + (first_query + q) * stride + staged_first;
                for (int64_t c = 0; c < count; c++) {
                    float total = 0.0f;
                    for (int64_t i = 0; i < r_q; i++) total += staged[c * lanes + q * r_q + i];
                    row[c] = total;
                }
            }
            staged_first += count;
        }
        float *swap = current;
        current = next;
        next = swap;
    }
}

#define ME_DISPATCH_KIND(call)                      \
    switch (kind) {                                 \
        case ME_KIND_F32: call(ME_KIND_F32); break; \
        case ME_KIND_F16: call(ME_KIND_F16); break; \
        case ME_KIND_BF16: call(ME_KIND_BF16); break; \
        default: call(ME_KIND_I8); break;           \
    }

ME_TARGET static int score_avx2(const float *queries, int64_t num_queries, int64_t r_q,
                                Layout *layout, int64_t r_c, int kind, int64_t start,
                                int64_t stop, float *scores, int64_t stride) {
    const int64_t dim = layout->dim;
    const int64_t vectors = num_queries * r_q;
    if (r_c == 1 && vectors <= 4) {
#define ME_FIRST(MB, JB, K) \
    score_first_vectors(queries, num_queries, r_q, layout, start, stop, scores, stride, MB, JB, K)
#define ME_CASE1(K) ME_FIRST(1, 4, K)
#define ME_CASE2(K) ME_FIRST(2, 4, K)
#define ME_CASE3(K) ME_FIRST(3, 4, K)
#define ME_CASE4(K) ME_FIRST(4, 2, K)
        if (vectors == 1) { ME_DISPATCH_KIND(ME_CASE1) }
        else if (vectors == 2) { ME_DISPATCH_KIND(ME_CASE2) }
        else if (vectors == 3) { ME_DISPATCH_KIND(ME_CASE3) }
        else { ME_DISPATCH_KIND(ME_CASE4) }
        return 0;
    }
    if (r_c > 1 && vectors <= 2) {
#define ME_FEW(MB, K) \
    score_few_vectors(queries, num_queries, r_q, layout, r_c, start, stop, scores, stride, MB, K)
#define ME_FEW1(K) ME_FEW(1, K)
#define ME_FEW2(K) ME_FEW(2, K)
        if (vectors == 1) { ME_DISPATCH_KIND(ME_FEW1) }
        else { ME_DISPATCH_KIND(ME_FEW2) }
        return 0;
    }
    if (vectors <= ME_GROUPED_MAX) { /* r_c > 1, or r_c = 1 with 5 to 8 query vectors */
        const int G = vectors <= 4 ? 1 : 2;
        float *padded = calloc((size_t)(4 * G * dim), sizeof(float));
        const void **rows = malloc((size_t)(2 * r_c + 3) * sizeof(void *));
        float *scales = malloc((size_t)r_c * sizeof(float));
        if (!padded || !rows || !scales) {
            free(padded);
            free(rows);
            free(scales);
            return -2;
        }
        memcpy(padded, queries, (size_t)(vectors * dim) * sizeof(float));
        if (r_c == 1)
            ME_PICK(score_grouped_first)(padded, num_queries, r_q, layout, start, stop, scores,
                                         stride);
        else
            (G == 1 ? ME_PICK(score_grouped_g1) : ME_PICK(score_grouped_g2))(
                padded, num_queries, r_q, layout, r_c, start, stop, scores, stride, rows, scales);
        free(padded);
        free(rows);
        free(scales);
        return 0;
    }
    /* whole queries per group, so that the transposed group stays within ME_QUERY_GROUP_BYTES */
    int64_t per_group = ME_QUERY_GROUP_BYTES / (r_q * dim * (int64_t)sizeof(float));
    if (per_group < 1) per_group = 1;
    if (per_group > num_queries) per_group = num_queries;
    int64_t max_lanes = (per_group * r_q + ME_LANES - 1) / ME_LANES * ME_LANES;
    const int64_t chunks = (dim + ME_LANES - 1) / ME_LANES;
    const int JB = max_lanes == ME_LANES ? 8 : 4;
    int64_t packed_rows = 2 * (r_c == 1 ? JB : (r_c + JB - 1) / JB * JB); /* two units */
    float *transposed = aligned_alloc(32, (size_t)(max_lanes * chunks * ME_LANES * 4));
    float *buffer = aligned_alloc(32, (size_t)(packed_rows * chunks * ME_LANES * 4));
    float *staged = aligned_alloc(32, (size_t)((ME_STAGE + 8) * max_lanes * 4));
    if (!transposed || !buffer || !staged) {
        free(transposed);
        free(buffer);
        free(staged);
        return -2;
    }
    for (int64_t first = 0; first < num_queries; first += per_group) {
        int64_t count = num_queries - first < per_group ? num_queries - first : per_group;
#define ME_GROUP(K)                                                                           \
    if (JB == 8)                                                                              \
        score_group(queries, first, count, r_q, layout, r_c, start, stop, scores, stride,     \
                    transposed, buffer, staged, 8, K);                                          \
    else                                                                                      \
        score_group(queries, first, count, r_q, layout, r_c, start, stop, scores, stride,     \
                    transposed, buffer, staged, 4, K);
        ME_DISPATCH_KIND(ME_GROUP)
    }
    free(transposed);
    free(buffer);
    free(staged);
    return 0;
}

#endif /* ME_HAVE_AVX2 */

#ifdef ME_HAVE_AVX2
/* One thread's share: candidates [start, stop). */
typedef struct {
    const float *queries;
    int64_t num_queries, r_q, r_c, start, stop, stride;
    Layout *layout;
    int kind, status;
    float *scores;
} RangeJob;

static void *run_range(void *argument) {
    RangeJob *job = argument;
    job->status = score_avx2(job->queries, job->num_queries, job->r_q, job->layout, job->r_c,
                             job->kind, job->start, job->stop, job->scores, job->stride);
    return NULL;
}

#define ME_MAX_THREADS 256
#endif

/*
 * Score candidates [start, stop) of the tiers into scores (num_queries, stride), on `threads`
 * threads, at most ME_MAX_THREADS (contiguous equal ranges; the calling thread takes the
 * first, the others are started here and joined before returning, so no thread outlives the
 * call).
 *
 * queries: (num_queries * r_q, dim) float32, row-major. tiers[t]: (N, sizes[t], dim) raw values
 * (float32, float16 or bfloat16 bits, int8); scales[t]: (N, sizes[t]) float32 for int8, else
 * ignored. The first r_c vectors are read, tier by tier. Returns 0, -1 when this build or CPU
 * has no kernel, -2 when memory runs out, -3 on bad arguments.
 */
ME_EXPORT int metaembed_native_score_threads(const float *queries, int64_t num_queries,
                                             int64_t r_q, int64_t dim, const void *const *tiers,
                                             const float *const *scales, const int64_t *sizes,
                                             int64_t num_tiers, int64_t r_c, int kind,
                                             int64_t start, int64_t stop, float *scores,
                                             int64_t stride, int64_t threads) {
#ifdef ME_HAVE_AVX2
    if (!metaembed_native_supported()) return -1;
    if (num_tiers < 1 || num_tiers > ME_MAX_TIERS || r_c < 1 || dim < 1 || r_q < 1 ||
        kind < 0 || kind > ME_KIND_I8 || threads < 1)
        return -3;
    if (threads > ME_MAX_THREADS) threads = ME_MAX_THREADS;
    static const int64_t element_bytes[4] = {4, 2, 2, 1};
    Layout layout;
    memset(&layout, 0, sizeof layout);
    layout.element_bytes = element_bytes[kind];
    layout.dim = dim;
    int64_t stored = 0;
    for (int64_t t = 0; t < num_tiers; t++) {
        layout.base[t] = (const char *)tiers[t];
        layout.scales[t] = kind == ME_KIND_I8 ? scales[t] : NULL;
        layout.sizes[t] = sizes[t];
        stored += sizes[t];
    }
    if (r_c > stored) return -3;
    layout.tier_of = malloc((size_t)r_c * sizeof(int64_t));
    layout.index_of = malloc((size_t)r_c * sizeof(int64_t));
    RangeJob *jobs = malloc((size_t)threads * sizeof(RangeJob));
    if (!layout.tier_of || !layout.index_of || !jobs) {
        free(layout.tier_of);
        free(layout.index_of);
        free(jobs);
        return -2;
    }
    for (int64_t j = 0, t = 0, index = 0; j < r_c; j++, index++) {
        while (index >= sizes[t]) {
            t++;
            index = 0;
        }
        layout.tier_of[j] = t;
        layout.index_of[j] = index;
    }
    for (int64_t i = 0; i < threads; i++) {
        RangeJob job = {queries, num_queries, r_q, r_c,
                        start + (stop - start) * i / threads,
                        start + (stop - start) * (i + 1) / threads,
                        stride, &layout, kind, 0, scores};
        jobs[i] = job;
    }
#ifdef ME_HAVE_THREADS
    pthread_t handles[ME_MAX_THREADS];
    int started[ME_MAX_THREADS] = {0};
    for (int64_t i = 1; i < threads; i++)
        if (jobs[i].start < jobs[i].stop)
            started[i] = pthread_create(&handles[i], NULL, run_range, &jobs[i]) == 0;
#endif
    int status = 0;
    for (int64_t i = 0; i < threads; i++) {
#ifdef ME_HAVE_THREADS
        if (started[i]) {
            pthread_join(handles[i], NULL);
        } else /* the calling thread's range, or a thread that could not be started */
#endif
        if (jobs[i].start < jobs[i].stop) {
            run_range(&jobs[i]);
        }
        if (status == 0) status = jobs[i].status;
    }
    free(layout.tier_of);
    free(layout.index_of);
    free(jobs);
    return status;
#else
    (void)queries; (void)num_queries; (void)r_q; (void)dim; (void)tiers; (void)scales;
    (void)sizes; (void)num_tiers; (void)r_c; (void)kind; (void)start; (void)stop;
    (void)scores; (void)stride; (void)threads;
    return -1;
#endif
}

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "_native",
    "metaembed's compiled scoring kernel; called through ctypes by metaembed.index.kernels_native.",
    -1, NULL, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&native_module); }
