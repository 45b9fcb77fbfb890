/*
 * int8 storage with few query vectors scored by VPDPBUSD (AVX-512 VNNI, on 256-bit registers
 * through AVX512-VL): the stored bytes are multiplied as integers, 4 per int32 lane, instead
 * of being converted to float32 one value at a time. Runs int8 with up to 4 query vectors
 * (where _native.c routes it: vnni_pays there, or instruction_set='vnni'); other shapes and
 * storage kinds run the AVX-512 copy.
 *
 * Each query vector is split into three signed int8 digits, q = a (d0 + d1 / 128 + d2 / 16384)
 * with a = max |q| / 127 (split_digits in _native_common.h: within a / 32768 per dim, as the
 * AMX copy's int8 form). VPDPBUSD takes one unsigned and one signed operand: the stored byte
 * c is flipped to c + 128 (unsigned) and the digits stay signed, so each lane gathers
 * sum (c + 128) d; its accumulator starts at -128 sum d over the lane's dims (query_digits
 * computes it once per call), which leaves the exact int32 sum c d. Per candidate vector and
 * query vector the three digit sums are joined (d0 * 16384 + (d1 * 128 + d2), the second part
 * still in int32: exact up to D = ME_VNNI_MAX_DIM), converted to float32 once and summed
 * across lanes, then scaled by a / 16384 and the stored vector's scale.
 *
 * 256-bit registers: Zen 4 runs 512-bit instructions in two passes, so the 256-bit form does
 * the same multiplies in the same time and its joins and lane sums cost half as much.
 */
#include "_native_common.h"

/* GCC 12's partial redundancy elimination leaves two register copies around each VPDPBUSD in
   these loops (the accumulators change registers every step): 3x the instructions */
#pragma GCC optimize("no-tree-pre")

#ifdef ME_HAVE_AVX2
#define ME_VNNI_TARGET \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define ME_VNNI_INLINE static inline __attribute__((always_inline)) ME_VNNI_TARGET
#define ME_STEP 32 /* dims (stored bytes) per step */
#define ME_DIGITS 3 /* split_digits' digits per query value */

/* The query's digits, laid out for the steps. */
typedef struct {
    int8_t *digits; /* (vectors, 3, padded) */
    int32_t *start; /* (vectors, 3, 8): -128 times each lane's sum of the digit */
    float *unit;    /* (vectors,): a / 16384 */
    int64_t padded; /* dims rounded up to ME_STEP, digits zero past dim */
} QueryDigits;

static int query_digits(const float *queries, int64_t vectors, int64_t dim, QueryDigits *out) {
    out->padded = (dim + ME_STEP - 1) / ME_STEP * ME_STEP;
    out->digits = aligned_alloc(64, (size_t)(vectors * ME_DIGITS * out->padded));
    out->start = aligned_alloc(64, (size_t)(vectors * ME_DIGITS * 8) * sizeof(int32_t));
    out->unit = malloc((size_t)vectors * sizeof(float));
    if (!out->digits || !out->start || !out->unit) return -2;
    memset(out->digits, 0, (size_t)(vectors * ME_DIGITS * out->padded));
    memset(out->start, 0, (size_t)(vectors * ME_DIGITS * 8) * sizeof(int32_t));
    for (int64_t m = 0; m < vectors; m++) {
        const double a = digit_unit(queries + m * dim, dim);
        out->unit[m] = (float)(a / 16384.0);
        for (int64_t d = 0; d < dim; d++) {
            int8_t digit[ME_DIGITS];
            split_digits(queries[m * dim + d], a, digit);
            for (int k = 0; k < ME_DIGITS; k++) {
                out->digits[(m * ME_DIGITS + k) * out->padded + d] = digit[k];
                out->start[(m * ME_DIGITS + k) * 8 + d % ME_STEP / 4] -= 128 * digit[k];
            }
        }
    }
    return 0;
}

static void free_digits(QueryDigits *digits) {
    free(digits->digits);
    free(digits->start);
    free(digits->unit);
}

/*
 * dots[m * JB + jj] = <query vector m, rows[jj]> in units of unit[m] (stored bytes, no
 * scale), m < MB, jj < JB; the same lines of `ahead` rows are fetched meanwhile.
 */
ME_VNNI_INLINE __m128 vnni_tile(const QueryDigits *query, int64_t dim,
                                const int8_t *const *rows, const char *const *ahead,
                                const int MB, const int JB, const int to_l2) {
    __m256i acc[12]; /* acc[(m * JB + jj) * ME_DIGITS + k], MB * JB <= 4 */
    for (int m = 0; m < MB; m++)
        for (int jj = 0; jj < JB; jj++)
            for (int k = 0; k < ME_DIGITS; k++)
                acc[(m * JB + jj) * ME_DIGITS + k] =
                    _mm256_load_si256((const __m256i *)(query->start + (m * ME_DIGITS + k) * 8));
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    for (int64_t d = 0; d < query->padded; d += ME_STEP) {
        fetch_ahead(ahead, d, JB, ME_KIND_I8, to_l2);
        const __mmask32 mask = dim - d >= ME_STEP ? 0xFFFFFFFFu : (1u << (dim - d)) - 1u;
        __m256i values[4]; /* c + 128, unsigned; a masked-off byte reads 0 (digits are 0) */
        if (dim - d >= ME_STEP)
            for (int jj = 0; jj < JB; jj++)
                values[jj] = _mm256_xor_si256(
                    _mm256_loadu_si256((const __m256i *)(rows[jj] + d)), flip);
        else
            for (int jj = 0; jj < JB; jj++)
                values[jj] = _mm256_xor_si256(_mm256_maskz_loadu_epi8(mask, rows[jj] + d), flip);
        for (int m = 0; m < MB; m++)
            for (int k = 0; k < ME_DIGITS; k++) {
                const __m256i digit = _mm256_load_si256(
                    (const __m256i *)(query->digits + (m * ME_DIGITS + k) * query->padded + d));
                for (int jj = 0; jj < JB; jj++) {
                    const int at = (m * JB + jj) * ME_DIGITS + k;
                    acc[at] = _mm256_dpbusd_epi32(acc[at], values[jj], digit);
                }
            }
    }
    __m256 joined[4]; /* per pair: d0 sums * 16384 + (d1 sums * 128 + d2 sums), lane-wise */
    for (int p = 0; p < 4; p++) joined[p] = _mm256_setzero_ps();
    for (int p = 0; p < MB * JB; p++) {
        const __m256i *sums = acc + p * ME_DIGITS;
        const __m256i rest = _mm256_add_epi32(_mm256_slli_epi32(sums[1], 7), sums[2]);
        joined[p] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[0]), _mm256_set1_ps(16384.0f),
                                    _mm256_cvtepi32_ps(rest));
    }
    return sum4_8(joined[0], joined[1], joined[2], joined[3]);
}

/* r_c = 1, one query vector: tiles of the first vectors of 4 candidates, one from each of 4
   equal sub-ranges (4 memory streams), scaled and written 4 at a time; the last candidates
   (fewer than 4) go one by one. */
ME_VNNI_INLINE void vnni_first_one(const QueryDigits *query, const Layout *layout,
                                   int64_t start, int64_t stop, float *scores) {
    /* vector 0 of candidate n: row n * sizes[0] of tier 0, its scale at the same position */
    const int64_t row_bytes = layout->sizes[0] * layout->dim;
    const int8_t *first = (const int8_t *)layout->base[0];
    const float *first_scales = layout->scales[0];
    const int64_t sub = (stop - start) / 4;
    const __m128 unit = _mm_set1_ps(query->unit[0]);
    const int8_t *rows[4];
    const char *ahead[4];
    for (int jj = 0; jj < 4; jj++) rows[jj] = first + (start + jj * sub) * row_bytes;
    for (int64_t i = 0; i < sub; i++) {
        const int64_t last = i + 1 < sub ? row_bytes : 0;
        for (int jj = 0; jj < 4; jj++) ahead[jj] = (const char *)rows[jj] + last;
        const __m128 scale = _mm_set_ps(first_scales[(start + 3 * sub + i) * layout->sizes[0]],
                                        first_scales[(start + 2 * sub + i) * layout->sizes[0]],
                                        first_scales[(start + sub + i) * layout->sizes[0]],
                                        first_scales[(start + i) * layout->sizes[0]]);
        const __m128 dots = vnni_tile(query, layout->dim, rows, ahead, 1, 4, layout->fetch_to_l2);
        float totals[4];
        _mm_storeu_ps(totals, _mm_mul_ps(_mm_mul_ps(dots, unit), scale));
        for (int jj = 0; jj < 4; jj++) {
            scores[start + jj * sub + i] = totals[jj];
            rows[jj] += row_bytes;
        }
    }
    for (int64_t n = start + 4 * sub; n < stop; n++) {
        const int8_t *row = first + n * row_bytes;
        const float dot = _mm_cvtss_f32(vnni_tile(query, layout->dim, &row, NULL, 1, 1, 0));
        scores[n] = dot * query->unit[0] * first_scales[n * layout->sizes[0]];
    }
}

/* r_c = 1: tiles of the first vectors of JB consecutive candidates. */
ME_VNNI_INLINE void vnni_first(const QueryDigits *query, int64_t num_queries, int64_t r_q,
                               const Layout *layout, int64_t start, int64_t stop, float *scores,
                               int64_t stride, const int MB, const int JB) {
    const int8_t *rows[4];
    const char *ahead[4];
    float dots[4];
    for (int64_t n = start; n < stop; n += JB) {
        const int count = stop - n < JB ? (int)(stop - n) : JB;
        for (int jj = 0; jj < JB; jj++) {
            const int64_t row = n + (jj < count ? jj : count - 1);
            const int64_t next = row + JB < stop ? row + JB : row;
            rows[jj] = vector_at(layout, row, 0);
            ahead[jj] = vector_at(layout, next, 0);
        }
        _mm_storeu_ps(dots, vnni_tile(query, layout->dim, rows, ahead, MB, JB, layout->fetch_to_l2));
        for (int jj = 0; jj < count; jj++) {
            const float scale = scale_at(layout, n + jj, 0);
            for (int64_t q = 0; q < num_queries; q++) {
                float total = 0.0f;
                for (int64_t i = 0; i < r_q; i++) {
                    const int64_t m = q * r_q + i;
                    total += dots[m * JB + jj] * query->unit[m];
                }
                scores[q * stride + n + jj] = total * scale;
            }
        }
    }
}

/* r_c > 1: per candidate, tiles of JB of its vectors (a tile past r_c repeats the last), each
   fetching the same rows of the candidate about 16 KiB further on (ahead_candidates). */
ME_VNNI_INLINE void vnni_many(const QueryDigits *query, int64_t num_queries, int64_t r_q,
                              const Layout *layout, int64_t r_c, int64_t start, int64_t stop,
                              float *scores, int64_t stride, const int MB, const int JB) {
    const int8_t *rows[4];
    const char *ahead[4];
    float dots[4], best[4], scale[4];
    const int64_t distance = ahead_candidates(r_c * layout->dim);
    for (int64_t n = start; n < stop; n++) {
        const int64_t later = ahead_candidate(n, distance, stop);
        for (int m = 0; m < MB; m++) best[m] = -INFINITY;
        for (int64_t j = 0; j < r_c; j += JB) {
            for (int jj = 0; jj < JB; jj++) {
                const int64_t vector = j + jj < r_c ? j + jj : r_c - 1;
                rows[jj] = vector_at(layout, n, vector);
                ahead[jj] = vector_at(layout, later, vector);
                scale[jj] = scale_at(layout, n, vector);
            }
            _mm_storeu_ps(dots, vnni_tile(query, layout->dim, rows, ahead, MB, JB, layout->fetch_to_l2));
            for (int m = 0; m < MB; m++)
                for (int jj = 0; jj < JB; jj++) {
                    const float dot = dots[m * JB + jj] * scale[jj];
                    best[m] = dot > best[m] ? dot : best[m];
                }
        }
        for (int m = 0; m < MB; m++) best[m] *= query->unit[m]; /* unit > 0: max unchanged */
        write_sums(best, num_queries, r_q, scores, stride, n);
    }
}

/* Candidate vectors per tile for MB query vectors: 3 * MB * JB int32 accumulators, at most 12
   (more spilled to the stack with GCC 12). */
static int vnni_tile_rows(int64_t vectors, int64_t r_c) {
    const int widest = vectors == 1 ? 4 : vectors == 2 ? 2 : 1;
    if (r_c == 1) return widest;
    return r_c >= widest ? widest : r_c >= 2 ? 2 : 1;
}

#define ME_VNNI_SHAPE(MB, JB)                                                                  \
    if (vectors == MB && rows == JB) {                                                         \
        if (r_c == 1)                                                                          \
            vnni_first(&query, num_queries, r_q, layout, start, stop, scores, stride, MB, JB); \
        else                                                                                   \
            vnni_many(&query, num_queries, r_q, layout, r_c, start, stop, scores, stride, MB,  \
                      JB);                                                                     \
    }

ME_VNNI_TARGET int metaembed_score_range_vnni(ME_RANGE_ARGS) {
    const int64_t vectors = num_queries * r_q;
    if (kind != ME_KIND_I8 || vectors > 4 || layout->dim > ME_VNNI_MAX_DIM)
        return metaembed_score_range_avx512(queries, num_queries, r_q, layout, r_c, kind, start,
                                            stop, scores, stride);
    QueryDigits query;
    if (query_digits(queries, vectors, layout->dim, &query) != 0) {
        free_digits(&query);
        return -2;
    }
    const int rows = vnni_tile_rows(vectors, r_c);
    if (vectors == 1 && r_c == 1) {
        vnni_first_one(&query, layout, start, stop, scores);
        free_digits(&query);
        return 0;
    }
    ME_VNNI_SHAPE(1, 1) ME_VNNI_SHAPE(1, 2) ME_VNNI_SHAPE(1, 4)
    ME_VNNI_SHAPE(2, 1) ME_VNNI_SHAPE(2, 2) ME_VNNI_SHAPE(3, 1) ME_VNNI_SHAPE(4, 1)
    free_digits(&query);
    return 0;
}
#endif
