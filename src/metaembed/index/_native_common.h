/*
 * Shared by the kernel's translation units (_native.c and one per instruction set): storage
 * constants, where a candidate vector lives, scalar decoding, and the helpers that do not
 * depend on the vector width (8-lane horizontal sums and the 8 x 8 transposed write-out are
 * AVX2 and run unchanged inside the AVX-512 kernel).
 */
#ifndef METAEMBED_NATIVE_COMMON_H
#define METAEMBED_NATIVE_COMMON_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ME_MAX_TIERS 8
#define ME_KIND_F32 0
#define ME_KIND_F16 1
#define ME_KIND_BF16 2
#define ME_KIND_I8 3
#ifndef ME_GROUPED_MAX
#define ME_GROUPED_MAX 8 /* query vectors up to which r_c > 1 runs in the grouped form */
#endif
#ifndef ME_DIM_BLOCK
#define ME_DIM_BLOCK 256 /* dims per pass of the grouped form */
#endif
#ifndef ME_RING_BLOCK
#define ME_RING_BLOCK 256 /* dims per pass of the one-block packed form (score_ring) */
#endif
#define ME_STAGE 64 /* candidates whose scores are staged before being written out */

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define ME_HAVE_AVX2 1
#include <immintrin.h>
#define ME_AVX2_TARGET __attribute__((target("avx2,fma,f16c")))
/* inlined into both kernels (the AVX-512 one is also compiled for AVX2, FMA and F16C) */
#define ME_COMMON static inline __attribute__((always_inline)) ME_AVX2_TARGET
#endif

#if defined(ME_HAVE_AVX2) && !defined(_WIN32)
#include <pthread.h>
#define ME_HAVE_THREADS 1
#endif

#ifdef ME_HAVE_AVX2
#define ME_MAX_THREADS 256

/*
 * run(job) for count jobs of `size` bytes each, laid out from `jobs`: job 0 on the calling
 * thread, the others on threads started here (on the calling thread where one cannot start,
 * or in builds without threads), all finished before returning, so no thread outlives the
 * call. count is at most ME_MAX_THREADS.
 */
static inline void run_jobs(void *(*run)(void *), void *jobs, size_t size, int64_t count) {
    char *first = jobs;
#ifdef ME_HAVE_THREADS
    pthread_t handles[ME_MAX_THREADS];
    int started[ME_MAX_THREADS] = {0};
    for (int64_t i = 1; i < count; i++)
        started[i] = pthread_create(&handles[i], NULL, run, first + i * size) == 0;
    run(first);
    for (int64_t i = 1; i < count; i++) {
        if (started[i])
            pthread_join(handles[i], NULL);
        else
            run(first + i * size);
    }
#else
    for (int64_t i = 0; i < count; i++) run(first + i * size);
#endif
}
#endif

#if defined(_WIN32)
#define ME_EXPORT __declspec(dllexport)
#else
#define ME_EXPORT __attribute__((visibility("default")))
#endif

#ifdef ME_HAVE_AVX2

/* Where vector j of every candidate lives: candidate 0's, and the step to the next candidate's
   (layouts are linear in the candidate, so a lookup is one multiply-add). */
typedef struct {
    const char *row;    /* vector j of candidate 0 */
    const float *scale; /* its int8 scale (NULL for other kinds) */
    int64_t row_step;   /* bytes from candidate n's vector j to candidate n + 1's */
    int64_t scale_step; /* floats between their scales: the tier's vectors per candidate */
} VectorPlace;

typedef struct {
    const char *base[ME_MAX_TIERS];
    const float *scales[ME_MAX_TIERS];
    int64_t sizes[ME_MAX_TIERS];
    int64_t element_bytes;
    int64_t dim;
    VectorPlace *places; /* (r_c,) */
    int fetch_to_l2;     /* the dims-along-lanes forms fetch the next rows into L2, not L1 */
    int lane_groups;     /* the 16-lane copy may take its lane-groups form (ME_PACKED_FEW) */
} Layout;

static inline const void *vector_at(const Layout *layout, int64_t n, int64_t j) {
    return layout->places[j].row + n * layout->places[j].row_step;
}

/*
 * How many tiers the first r_c vectors fill whole (r_c ends at a tier's end), or 0. sizes: the
 * tiers' vector counts, up to num_tiers of them.
 */
static inline int64_t whole_tiers(const int64_t *sizes, int64_t num_tiers, int64_t r_c) {
    int64_t total = 0, t = 0;
    while (t < num_tiers && total < r_c) total += sizes[t++];
    return total == r_c ? t : 0;
}

/* Whether the AMX copy scores this storage straight from whole tiers ("direct", no decode). */
static inline int amx_reads_directly(int kind, int64_t dim) {
    return (kind == ME_KIND_BF16 && dim % 32 == 0) || (kind == ME_KIND_I8 && dim % 64 == 0);
}

/* Whether the AMX copy scores float16 in tier order, split a pair of row tiles at a time
   (direct_packed), rather than decoding blocks of candidates. */
static inline int amx_streams_f16(int kind, int64_t dim, int64_t vectors) {
    return kind == ME_KIND_F16 && dim % 32 == 0 && vectors <= 16;
}

static inline float scale_at(const Layout *layout, int64_t n, int64_t j) {
    return layout->places[j].scale[n * layout->places[j].scale_step];
}

ME_COMMON float load1(const void *vector, int64_t d, const int kind) {
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

/*
 * The int8 digit unit of a query vector: a = max |q| / 127 (1 for a zero vector), so that
 * q / a lies within [-127, 127].
 */
static inline double digit_unit(const float *vector, int64_t dim) {
    float top = 0.0f;
    for (int64_t d = 0; d < dim; d++) top = fmaxf(top, fabsf(vector[d]));
    return top > 0.0f ? top / 127.0 : 1.0;
}

/*
 * value = a * (digit[0] + digit[1] / 128 + digit[2] / 16384) within a / 32768: three signed
 * int8 digits, each the rounded remainder of the one before times 128 (|digit[0]| <= 127,
 * the others within [-64, 64]). Used by the AMX and VNNI int8 forms, which multiply the
 * stored bytes by each digit exactly in int32.
 */
static inline void split_digits(float value, double a, int8_t digit[3]) {
    double rest = value / a; /* within [-127, 127] */
    for (int k = 0; k < 3; k++) {
        const double rounded = nearbyint(rest);
        digit[k] = (int8_t)rounded;
        rest = (rest - rounded) * 128.0; /* within [-64, 64] */
    }
}

/* Bytes per stored value. */
ME_COMMON int element_bytes_of(const int kind) {
    return kind == ME_KIND_F32 ? 4 : kind == ME_KIND_I8 ? 1 : 2;
}

/* At each cache line of the rows (offset d values), fetch the same line of the `ahead` rows:
   into L1, or into L2 only with to_l2 (Layout.fetch_to_l2). */
ME_COMMON void fetch_ahead(const char *const *ahead, int64_t d, const int JB, const int kind,
                           const int to_l2) {
    const int element_bytes = element_bytes_of(kind);
    if (ahead && (d * element_bytes) % 64 == 0)
        for (int jj = 0; jj < JB; jj++) {
            if (to_l2)
                _mm_prefetch(ahead[jj] + d * element_bytes, _MM_HINT_T1);
            else
                _mm_prefetch(ahead[jj] + d * element_bytes, _MM_HINT_T0);
        }
}

/*
 * Candidates between the one a dims-along-lanes form at r_c > 1 (grouped, few vectors, VNNI)
 * scores and the one whose rows it fetches, for candidates of `bytes` stored bytes each: about
 * 16 KiB ahead, at least the next candidate, at most 16 later. For the 1-2 query vector tiles
 * (score_few_vectors, vnni_many), against the next candidate they fetched before (Zen 4 VM,
 * 2026-12-06, evening, one query, two builds side by side in one process, both orders): at
 * D = 128 100k with 58-61 GB/s available, (2, 4) float16 2.70-3.18 vs 3.08-3.64 ms, (2, 16)
 * 7.13-7.22 vs 8.75-8.99, bfloat16 (2, 16) 7.66-8.13 vs 8.99-9.19; int8, and anything timed
 * while the VM gave 36 GB/s, level (int8 (2, 4) 1.97 vs 1.95, D = 1024 float16 (2, 4) 7.47-7.66
 * vs 7.55-7.57).
 * For the grouped form, against the next tile it fetched before (same VM, that afternoon):
 * (4, 8) D = 1024 30k float16 15.0-16.3 vs 21.2-22.8 ms, bfloat16 16.7 vs 21.4, (3, 8)
 * float16 13.5 vs 21.8; with the query rows 64-byte aligned as well, (8, 16) D = 1024 int8
 * 46.8 vs 54.7, float16 51.1 vs 59.5; D = 128 (16 KiB = 8 candidates ahead at r_c = 8)
 * level, where one candidate ahead ran up to 1.1x slower.
 */
ME_COMMON int64_t ahead_candidates(int64_t bytes) {
    const int64_t distance = 16384 / (bytes > 0 ? bytes : 1);
    return distance < 1 ? 1 : distance > 16 ? 16 : distance;
}

/* The candidate whose rows are fetched while candidate n is scored: `distance` on, held to the
   range's last candidate (stop - 1) near its end. */
ME_COMMON int64_t ahead_candidate(int64_t n, int64_t distance, int64_t stop) {
    return n + distance < stop ? n + distance : stop - 1;
}

/* (sum a, sum b, sum c, sum d) of four 8-lane accumulators. */
ME_COMMON __m128 sum4_8(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 pairs = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(pairs), _mm256_extractf128_ps(pairs, 1));
}

/* scores[q][n] = sum over the query's vectors of best[q * r_q + i]. */
ME_COMMON void write_sums(const float *best, int64_t num_queries, int64_t r_q, float *scores,
                          int64_t stride, int64_t n) {
    for (int64_t q = 0; q < num_queries; q++) {
        float total = 0.0f;
        for (int64_t i = 0; i < r_q; i++) total += best[q * r_q + i];
        scores[q * stride + n] = total;
    }
}

/*
 * Packed candidate rows, as in the packed operand of a GEMM: with W floats per vector register,
 * a tile of JB rows is stored as (chunks of W dims, JB, W), so the JB values of one dimension
 * sit at constant offsets from one pointer. Dims past `dim` are zero (the transposed queries
 * are zero there too).
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
    float *target;        /* packed tile, (chunks, JB, W) */
    const char *ahead[8]; /* the same rows one unit later, fetched into the cache, or NULL */
    int64_t dim;          /* dims packed: the layout's, or one dim block's (score_ring) */
} PackJob;

ME_COMMON const void *tile_row(const Layout *layout, int64_t r_c, int64_t start, int64_t stop,
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
 * max), and the rows of tile ahead_t of unit ahead_unit, to fetch ahead while this one is
 * packed (none when ahead_unit < 0).
 */
ME_COMMON void plan_tile(const Layout *layout, int64_t r_c, int64_t start, int64_t stop,
                         int64_t unit, int64_t t, int64_t ahead_unit, int64_t ahead_t,
                         float *target, PackJob *job, const int JB, const int kind) {
    for (int jj = 0; jj < JB; jj++) {
        job->rows[jj] = tile_row(layout, r_c, start, stop, unit, t, jj, &job->scales[jj], JB, kind);
        job->ahead[jj] = ahead_unit >= 0 ? tile_row(layout, r_c, start, stop, ahead_unit, ahead_t,
                                                    jj, NULL, JB, kind)
                                         : NULL;
    }
    job->target = target;
    job->dim = layout->dim;
}

/*
 * scores[q][c] = staged[c * lanes + first_lane + q] for 8 queries and `count` candidates:
 * 8 x 8 blocks transposed in registers, then stored as whole rows of candidates.
 */
ME_COMMON void write_transposed(const float *staged, int64_t lanes, int64_t first_lane,
                                int64_t count, float *scores, int64_t stride) {
    int64_t c = 0;
    for (; c + 8 <= count; c += 8) {
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
        for (int q = 0; q < 8; q++)
            scores[q * stride + c] = staged[c * lanes + first_lane + q];
}

#define ME_DISPATCH_KIND(call)                      \
    switch (kind) {                                 \
        case ME_KIND_F32: call(ME_KIND_F32); break; \
        case ME_KIND_F16: call(ME_KIND_F16); break; \
        case ME_KIND_BF16: call(ME_KIND_BF16); break; \
        default: call(ME_KIND_I8); break;           \
    }

/* One instruction set's kernel for candidates [start, stop) on the calling thread. */
#define ME_RANGE_ARGS                                                                        \
    const float *queries, int64_t num_queries, int64_t r_q, Layout *layout, int64_t r_c,       \
        int kind, int64_t start, int64_t stop, float *scores, int64_t stride
__attribute__((visibility("hidden"))) int metaembed_score_range_avx2(ME_RANGE_ARGS);
__attribute__((visibility("hidden"))) int metaembed_score_range_avx512(ME_RANGE_ARGS);
__attribute__((visibility("hidden"))) int metaembed_score_range_amx(ME_RANGE_ARGS);
__attribute__((visibility("hidden"))) int metaembed_score_range_vnni(ME_RANGE_ARGS);
#define ME_VNNI_MAX_DIM 4096 /* the VNNI copy's int32 digit sums are exact up to here */

#endif /* ME_HAVE_AVX2 */

/* Whether the CPU and OS run the AMX copy (_native_amx.c; 0 on every other platform). */
__attribute__((visibility("hidden"))) int metaembed_amx_usable(void);
#endif /* METAEMBED_NATIVE_COMMON_H */
