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
 * dims padded to 32) that the A tiles read with the row stride, fetching the next block's
 * rows into the cache meanwhile, then scored (decoding the next block between the tile steps
 * instead, with a block's rows ordered by tier to decode whole stretches, took 0.92-1.25x the
 * time of this plain order over ten shapes, faster only at 16 queries (2, 4) on bfloat16, and
 * was dropped); 2 x 1 tiles of scores (32 candidate vectors x 16 query vectors) are stored to
 * a (rows, query vectors) block, maxed over each candidate's rows lane-wise and summed over
 * each query's vectors. _native.c picks this copy only for the shapes where it beat the AVX-512
 * one (amx_pays): one query reads each decoded value for one column block, and the decoding
 * (not the tiles) then bounds the speed (one query (16, 64) float16, D = 128, 100k candidates:
 * 129 ms, the decoding alone 99, the tiles alone 19; a plain read of the tiers 55).
 *
 * bfloat16 with dim % 32 == 0 at budgets that end at a tier's end skips the decoding: the
 * "direct form" (direct_block) loads the A tiles from the tiers themselves, 16 candidates
 * at a time (side by side with the decoded form on this file's machine: 0.69-0.88x the time
 * in six of seven shapes, 1.14x at one query (16, 16); single runs). int8 with dim % 64 == 0
 * has its own direct form (direct_block_i8): the query, not the candidate, is split, into
 * three int8 digits (query_digits), and TDPBSSD sums the exact int32 products of the stored
 * bytes with each digit, 64 dims per step (against the decoded int8 form, D = 128, 100k,
 * side by side: one query (16, 64) 52-53 ms vs 69-70, (8, 16) 13.8 vs 16.0-16.6, (4, 8)
 * 7.2-7.5 vs 8.2-8.4, 16 queries (2, 4) 6.3-6.5 vs 8.0-8.3; within 1.5e-6 of the AVX-512 copy,
 * the decoded form 3.8e-6). Tiles there: 0, 1, 4 the digit sums, 2 the stored rows, 5-7 the
 * digits.
 *
 * bfloat16 direct with at most 8 query vectors (one query up to (8, 16)) packs both parts of
 * the query into one B tile per step (direct_packed), halving the tile products, which at 16
 * columns of 8 vectors left half of each product idle (D = 128, 100k, one query (8, 16):
 * 19.6-22.9 ms, the AVX-512 copy 25-26 and direct_block as much; within 3e-6 of AVX-512).
 * int8 direct with at most 5 query vectors packs the three digits the same way (columns
 * 5d + n), one TDPBSSD per row tile and step instead of three, row tiles in pairs (one query,
 * D = 128, 100k, side by side: (4, 8) 6.2 ms vs 7.2 for direct_block_i8, (2, 4) 1.8 vs 2.8);
 * with 6-8 vectors in two tiles, digits 0-1 and digit 2 (one query (8, 16): D = 1024, 30k,
 * 27.5-28.3 ms vs 38.0-40.0; D = 128 14.0-14.3 vs 14.7-15.1). float16 with dim % 32 == 0 and
 * at most 8 query vectors takes the same path in tier order (amx_streams_f16): each pair of
 * row tiles is split into bfloat16 parts (truncated to 8 bits, and the exact rest) one pair
 * ahead, fetching ME_F16_AHEAD bytes ahead in the tier, and both parts multiply the packed
 * query tile into one C tile, so a row's dot is again lanes n + (8 + n) (one query (8, 16),
 * D = 128, 100k, side by side: 19.0-19.7 ms vs 29.8 for the decoded form and 22.5-22.8 on
 * AVX-512; without the prefetch 33.5, 1 KiB ahead 19.8-21.0, 4 KiB 21.6, 16 KiB 26.0). With
 * 9-16 query vectors (the wide float16 form) both query parts take a B tile each, three
 * products per row tile and step, one lane per query vector (against the decoded form, side
 * by side: one query (16, 64) 91.9 ms vs 120.2 at D = 128, 214.7 vs 247.2 at D = 1024 (30k);
 * (1, 1) x 16 queries 1.88 vs 2.87).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* syscall() in <unistd.h>; undeclared it is an error from GCC 14 */
#endif
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
    __attribute__((target("amx-tile,amx-bf16,amx-int8,avx512f,avx512bw,avx512vl,avx512bf16,"  \
                          "avx2,fma,f16c")))
#define ME_AMX_INLINE static inline __attribute__((always_inline)) ME_AMX_TARGET

#define ME_ARCH_REQ_XCOMP_PERM 0x1023
#define ME_XFEATURE_XTILEDATA 18
#define ME_BLOCK_ROWS 64 /* candidate vectors decoded per block (at least one unit) */
#define ME_DIRECT_AHEAD 16384 /* bytes ahead in a tier that the direct form fetches */
#define ME_F16_AHEAD 2048     /* bytes ahead that split_f16_rows fetches */
#define ME_PACKED_AHEAD 2048  /* bytes ahead of a pair of row tiles that direct_packed fetches */
#define ME_PACKED_PAIR_BYTES 8192 /* ... for pairs up to this size (bfloat16 and int8) */
#define ME_STEPS_AHEAD 4 /* larger int8 pairs: steps ahead whose lines direct_packed fetches */
#define ME_AMX_QUERY_BYTES (1024 * 1024) /* query parts per pass over the candidates */

/* Whether this CPU and OS run the AMX copy (asks the OS for the tile state once). */
int metaembed_amx_usable(void) {
    static int usable = -1;
    if (usable < 0) {
        __builtin_cpu_init();
        usable = __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-bf16") &&
                 __builtin_cpu_supports("amx-int8") &&
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

/*
 * int8 B tiles of `vectors` query vectors for the int8 direct form: vector m is
 * a_m * (d0 + d1 / 128 + d2 / 16384), three signed int8 digits per dim, a_m = max |q_m| / 127
 * and each digit the rounded remainder of the one before times 128 (within a_m / 32768 per
 * dim, 2^-22 of the largest entry). Tile (block, step, digit) holds, at row r, column n,
 * byte e, that digit of vector block * 16 + n at dim step * 64 + 4r + e (the VNNI layout).
 * scale_of: (blocks * 16,) the a_m, 0 past `vectors`.
 */
static void query_digits(const float *queries, int64_t vectors, int64_t dim, int64_t steps,
                         int8_t *tiles, float *scale_of) {
    const int64_t blocks = (vectors + 15) / 16;
    memset(tiles, 0, (size_t)(blocks * steps * 3 * 1024));
    memset(scale_of, 0, (size_t)(blocks * 16) * sizeof(float));
    for (int64_t m = 0; m < vectors; m++) {
        const double a = digit_unit(queries + m * dim, dim);
        scale_of[m] = (float)a;
        for (int64_t d = 0; d < dim; d++) {
            int8_t *tile = tiles + (m / 16 * steps + d / 64) * 3 * 1024;
            const int64_t at = (d % 64) / 4 * 64 + m % 16 * 4 + d % 4;
            int8_t digit[3];
            split_digits(queries[m * dim + d], a, digit);
            for (int k = 0; k < 3; k++) tile[k * 1024 + at] = digit[k];
        }
    }
}

/*
 * One stored vector as bfloat16 parts (hi, and lo for float16), dims [0, dim); the same dims
 * of `ahead` (the vector one block later, or NULL) are fetched into the cache meanwhile.
 */
ME_AMX_INLINE void decode_row(const void *vector, const char *ahead, int64_t dim, uint16_t *hi,
                              uint16_t *lo, const int kind) {
    const __m512 split = _mm512_set1_ps(65537.0f); /* 2^16 + 1 */
    const int64_t element_bytes = element_bytes_of(kind);
    for (int64_t d = 0; d < dim; d += 32) {
        if (ahead) _mm_prefetch(ahead + d * element_bytes, _MM_HINT_T0);
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
 * Rows c * r_c + j of hi and lo: vector j of candidate first + c (past `stop`, the last
 * candidate again), with the rows one block later fetched ahead; int8 scales in `scales`.
 */
ME_AMX_INLINE void decode_block(const Layout *layout, int64_t r_c, int64_t first,
                                int64_t per_block, int64_t stop, int64_t padded, uint16_t *hi,
                                uint16_t *lo, float *scales, const int kind) {
    for (int64_t c = 0; c < per_block; c++) {
        const int64_t candidate = first + c < stop ? first + c : stop - 1;
        const int64_t later = first + per_block + c;
        for (int64_t j = 0; j < r_c; j++) {
            const int64_t row = c * r_c + j;
            decode_row(vector_at(layout, candidate, j),
                       later < stop ? vector_at(layout, later, j) : NULL, layout->dim,
                       hi + row * padded, lo + row * padded, kind);
            if (kind == ME_KIND_I8) scales[row] = scale_at(layout, candidate, j);
        }
    }
}

/*
 * Scores of `tiles` row tiles of decoded candidate vectors (hi, lo: (tiles * 16, padded)
 * bfloat16) against one column block of query parts, into rows of `out` (row stride
 * out_stride floats). Tiles: 0-1 scores, 2-3 candidate hi, 4-5 candidate lo, 6-7 query hi
 * and lo.
 */
ME_AMX_INLINE void score_tiles(const uint16_t *hi, const uint16_t *lo, int64_t tiles,
                               int64_t padded, int64_t steps, const uint16_t *query, float *out,
                               int64_t out_stride, const int kind) {
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
        }
        _tile_stored(0, out + t * 16 * out_stride, out_bytes);
    }
}

/*
 * scores[q][first + c] for `count` (at most 16) candidates from best (16, lanes): the sum of
 * query q's r_q lanes. best is first transposed, 8 x 8 blocks in registers, into flipped
 * (lanes, 16), candidates along the vector, so each query's sum is r_q vector adds and one
 * store (the scalar sums, one per query and candidate, took most of a (1, 1) batch's time).
 */
ME_AMX_INLINE void write_scores(const float *best, int64_t count, int64_t first,
                                int64_t num_queries, int64_t r_q, int64_t lanes, float *flipped,
                                float *scores, int64_t stride) {
    for (int64_t lane = 0; lane < lanes; lane += 8)
        write_transposed(best, lanes, lane, 16, flipped + lane * 16, 16);
    const __mmask16 mask = (__mmask16)((1u << count) - 1);
    for (int64_t q = 0; q < num_queries; q++) {
        const float *own = flipped + q * r_q * 16; /* (r_q, 16) */
        __m512 total = _mm512_load_ps(own);
        for (int64_t i = 1; i < r_q; i++) total = _mm512_add_ps(total, _mm512_load_ps(own + i * 16));
        _mm512_mask_storeu_ps(scores + q * stride + first, mask, total);
    }
}

/*
 * scores[q][first + c] for the block's `count` candidates, from the dots of its rows
 * (rows, lanes): the max over each candidate's r_c rows (int8: each scaled first), lane-wise,
 * then the sum over each query's r_q lanes.
 */
ME_AMX_INLINE void reduce_block(const float *dots, const float *scales, int64_t r_c,
                                int64_t first, int64_t count, int64_t num_queries, int64_t r_q,
                                int64_t lanes, float *best, float *flipped, float *scores,
                                int64_t stride, const int kind) {
    for (int64_t c = 0; c < count; c++)
        for (int64_t b = 0; b < lanes; b += 16) {
            __m512 top = _mm512_set1_ps(-INFINITY);
            for (int64_t row = c * r_c; row < (c + 1) * r_c; row++) {
                __m512 dot = _mm512_load_ps(dots + row * lanes + b); /* (16,) */
                if (kind == ME_KIND_I8) dot = _mm512_mul_ps(dot, _mm512_set1_ps(scales[row]));
                top = _mm512_max_ps(top, dot);
            }
            _mm512_store_ps(best + c * lanes + b, top);
        }
    for (int64_t c = 0; c < count; c += 16)
        write_scores(best + c * lanes, count - c < 16 ? count - c : 16, first + c, num_queries,
                     r_q, lanes, flipped, scores, stride);
}

/*
 * The direct form, bfloat16 with dim % 32 == 0 and whole tiers: per block of 16 candidates,
 * tier t holds their vectors as 16 * sizes[t] consecutive rows, whole row tiles that the A
 * tiles load from the tier itself (no decoding, no copy); as each A tile is loaded, its lines
 * ME_DIRECT_AHEAD bytes further on in the tier are fetched into the cache (one query (16, 64),
 * D = 128, single runs: 16 KiB ahead 91 ms, the next block's lines 101, nothing 97, 1 KiB 101,
 * 4 KiB 105, into L2 only 106-122). Rows come in tier order, so row r of tier t belongs to
 * candidate r / sizes[t]: each pair of row tiles is maxed into `best` (16, lanes) as soon as
 * it is scored. Candidates [first, first + 16), all below the range's end;
 * `ahead`: whether the next block is in range too (else nothing is fetched).
 */
ME_AMX_INLINE void direct_block(const Layout *layout, int64_t tiers, int64_t first, int ahead,
                                const uint16_t *query, int64_t blocks, int64_t steps,
                                int64_t lanes, float *dots, float *best) {
    const int64_t row_bytes = layout->dim * 2;
    for (int64_t i = 0; i < 16 * lanes; i += 16)
        _mm512_store_ps(best + i, _mm512_set1_ps(-INFINITY));
    for (int64_t t = 0; t < tiers; t++) {
        const int64_t size = layout->sizes[t];
        const char *base = layout->base[t] + first * size * row_bytes; /* (16 * size, dim) */
        const int64_t next = ahead ? ME_DIRECT_AHEAD : 0;
        for (int64_t tile = 0; tile < size; tile += 2) {
            const int pair = tile + 1 < size;
            const char *a0 = base + tile * 16 * row_bytes, *a1 = a0 + 16 * row_bytes;
            for (int64_t b = 0; b < blocks; b++) {
                const uint16_t *columns = query + b * steps * 1024;
                _tile_zero(0);
                _tile_zero(1);
                for (int64_t s = 0; s < steps; s++) {
                    if (next && b == 0)
                        for (int r = 0; r < 16; r++) {
                            _mm_prefetch(a0 + r * row_bytes + s * 64 + next, _MM_HINT_T0);
                            if (pair) _mm_prefetch(a1 + r * row_bytes + s * 64 + next, _MM_HINT_T0);
                        }
                    _tile_loadd(6, columns + s * 1024, 64);
                    _tile_loadd(7, columns + s * 1024 + 512, 64);
                    _tile_loadd(2, a0 + s * 64, row_bytes);
                    _tile_dpbf16ps(0, 2, 6);
                    _tile_dpbf16ps(0, 2, 7);
                    if (pair) {
                        _tile_loadd(3, a1 + s * 64, row_bytes);
                        _tile_dpbf16ps(1, 3, 6);
                        _tile_dpbf16ps(1, 3, 7);
                    }
                }
                _tile_stored(0, dots + b * 16, lanes * 4);
                if (pair) _tile_stored(1, dots + 16 * lanes + b * 16, lanes * 4);
            }
            for (int64_t r = 0; r < (pair ? 32 : 16); r++) {
                float *top = best + (tile * 16 + r) / size * lanes; /* (lanes,) */
                for (int64_t b = 0; b < lanes; b += 16)
                    _mm512_store_ps(top + b, _mm512_max_ps(_mm512_load_ps(top + b),
                                                           _mm512_load_ps(dots + r * lanes + b)));
            }
        }
    }
}

/*
 * B tiles for at most 8 query vectors, both parts in one tile: per step, column n < 8 holds
 * the hi part of vector n and column 8 + n its lo part (query_tiles' layout otherwise), so a
 * row's dot is the sum of its lanes n and 8 + n. tiles: query_tiles' output (block 0).
 */
static void packed_query_tiles(const uint16_t *tiles, int64_t steps, uint16_t *packed) {
    for (int64_t s = 0; s < steps; s++)
        for (int64_t r = 0; r < 16; r++)
            for (int64_t n = 0; n < 8; n++)
                for (int64_t e = 0; e < 2; e++) {
                    const int64_t at = r * 32 + n * 2 + e;
                    packed[s * 512 + at] = tiles[s * 2 * 512 + at];
                    packed[s * 512 + at + 16] = tiles[(s * 2 + 1) * 512 + at];
                }
}

/*
 * The same for int8 (query_digits' layout otherwise). At most 5 query vectors: the three
 * digits in one tile per step, column 5 * d + n holding digit d of vector n (column 15 zero),
 * so a row's dot is its lanes n, 5 + n and 10 + n weighted 1, 2^-7 and 2^-14. `wide`, 6-8
 * vectors: two tiles per step, digits 0 and 1 in columns n and 8 + n of the first, digit 2 in
 * columns n of the second (columns 8-15 zero).
 */
static void packed_digit_tiles(const int8_t *digits, int64_t steps, int wide, int8_t *packed) {
    const int64_t step_bytes = wide ? 2048 : 1024, width = wide ? 8 : 5;
    memset(packed, 0, (size_t)(steps * step_bytes));
    for (int64_t s = 0; s < steps; s++)
        for (int64_t d = 0; d < 3; d++) {
            const int64_t at = wide ? d / 2 * 1024 + d % 2 * 32 : d * 20; /* bytes */
            for (int64_t r = 0; r < 16; r++) /* columns 0 .. width - 1 of digit d */
                memcpy(packed + s * step_bytes + at + r * 64, digits + (s * 3 + d) * 1024 + r * 64,
                       (size_t)(width * 4));
        }
}

/*
 * count float16 values (a multiple of 32), consecutive rows of a tier, as bfloat16 parts hi
 * and lo of the same layout: hi is the value truncated to 8 significant bits, lo the rest
 * (at most 3 bits, so both are exact in bfloat16 and hi + lo is the value).
 */
ME_AMX_INLINE void split_f16_rows(const uint16_t *values, int64_t count, uint16_t *hi,
                                  uint16_t *lo) {
    const __m512i top = _mm512_set1_epi32((int)0xFFFF0000u);
    for (int64_t i = 0; i < count; i += 32) {
        _mm_prefetch((const char *)(values + i) + ME_F16_AHEAD, _MM_HINT_T0);
        const __m512i raw = _mm512_loadu_si512(values + i);
        const __m512 low = _mm512_cvtph_ps(_mm512_castsi512_si256(raw)); /* values i .. i + 15 */
        const __m512 high = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(raw, 1));
        const __m512 low_hi = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(low), top));
        const __m512 high_hi =
            _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(high), top));
        _mm512_storeu_si512(hi + i, (__m512i)_mm512_cvtne2ps_pbh(high_hi, low_hi));
        _mm512_storeu_si512(lo + i, (__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(high, high_hi),
                                                                  _mm512_sub_ps(low, low_hi)));
    }
}

/*
 * The float16 parts of the pair of row tiles (tier *t, tiles *tile and *tile + 1) of block
 * `first` into parts (hi, lo of the first tile, then of the second); then advances *t, *tile
 * to the next pair in direct_packed's order.
 */
ME_AMX_INLINE void split_f16_pair(const Layout *layout, int64_t first, int64_t *t,
                                  int64_t *tile, uint16_t *parts) {
    const int64_t size = layout->sizes[*t], values = 16 * layout->dim;
    const uint16_t *rows = /* (32, dim), or 16 rows for a tier's last odd tile */
        (const uint16_t *)layout->base[*t] + (first * size + *tile * 16) * layout->dim;
    split_f16_rows(rows, values, parts, parts + values);
    if (*tile + 1 < size)
        split_f16_rows(rows + values, values, parts + 2 * values, parts + 3 * values);
    *tile += 2;
    if (*tile >= size) {
        *tile = 0;
        ++*t;
    }
}

/*
 * Fetch the lines of step s of the pair of row tiles at a0 (rows row_bytes apart; one tile
 * unless `pair`), or, past the pair's last step, of step s - steps of the pair after it.
 */
ME_AMX_INLINE void fetch_step(const char *a0, int64_t row_bytes, int64_t s, int64_t steps,
                              int pair) {
    if (s >= steps) {
        a0 += 32 * row_bytes; /* the next pair; past a tier's end a fetch that is not used */
        s -= steps;
        pair = 1;
    }
    for (int r = 0; r < (pair ? 32 : 16); r++)
        _mm_prefetch(a0 + r * row_bytes + s * 64, _MM_HINT_T0);
}

/*
 * one step of direct_packed: B tile TB (loaded unless resident), A tiles 2-3 (float16: the
 * hi and lo parts of a row tile, one after the other), C tiles 0-1
 */
#define ME_PACKED_STEP(TB, s)                                                            \
    do {                                                                                 \
        if (step_fetch) fetch_step(a0, row_bytes, (s) + ME_STEPS_AHEAD, steps, pair);   \
        if (!resident) _tile_loadd(TB, packed + (s) * 1024, 64);                         \
        if (kind == ME_KIND_F16) {                                                       \
            _tile_loadd(2, parts + (s) * 64, row_bytes);                                 \
            _tile_loadd(3, parts + part_bytes + (s) * 64, row_bytes);                    \
            _tile_dpbf16ps(0, 2, TB);                                                    \
            _tile_dpbf16ps(0, 3, TB);                                                    \
        } else {                                                                         \
            _tile_loadd(2, a0 + (s) * 64, row_bytes);                                    \
            if (kind == ME_KIND_I8) _tile_dpbssd(0, 2, TB); else _tile_dpbf16ps(0, 2, TB); \
        }                                                                                \
        if (pair && kind == ME_KIND_F16) {                                               \
            _tile_loadd(2, parts + 2 * part_bytes + (s) * 64, row_bytes);                \
            _tile_loadd(3, parts + 3 * part_bytes + (s) * 64, row_bytes);                \
            _tile_dpbf16ps(1, 2, TB);                                                    \
            _tile_dpbf16ps(1, 3, TB);                                                    \
        } else if (pair) {                                                               \
            _tile_loadd(3, a1 + (s) * 64, row_bytes);                                    \
            if (kind == ME_KIND_I8) _tile_dpbssd(1, 3, TB); else _tile_dpbf16ps(1, 3, TB); \
        }                                                                                \
    } while (0)

/* one step of direct_packed's wide float16 form (9-16 query vectors): B tiles 4-5 the query's
   hi and lo parts (query_tiles), A tiles 2-3 a row tile's parts, C tiles 0-1 */
#define ME_F16_WIDE_STEP(s)                                                              \
    do {                                                                                 \
        _tile_loadd(4, packed + (s) * 2048, 64);                                         \
        _tile_loadd(5, packed + (s) * 2048 + 1024, 64);                                  \
        _tile_loadd(2, parts + (s) * 64, row_bytes);                                     \
        _tile_loadd(3, parts + part_bytes + (s) * 64, row_bytes);                        \
        _tile_dpbf16ps(0, 2, 4);                                                         \
        _tile_dpbf16ps(0, 3, 4);                                                         \
        _tile_dpbf16ps(0, 2, 5);                                                         \
        if (pair) {                                                                      \
            _tile_loadd(2, parts + 2 * part_bytes + (s) * 64, row_bytes);                \
            _tile_loadd(3, parts + 3 * part_bytes + (s) * 64, row_bytes);                \
            _tile_dpbf16ps(1, 2, 4);                                                     \
            _tile_dpbf16ps(1, 3, 4);                                                     \
            _tile_dpbf16ps(1, 2, 5);                                                     \
        }                                                                                \
    } while (0)

/* one step of direct_packed's wide int8 form: B tiles 4-5, A tiles 2-3, C tiles 0-1 and 6-7 */
#define ME_WIDE_STEP(s)                                                                  \
    do {                                                                                 \
        if (step_fetch) fetch_step(a0, row_bytes, (s) + ME_STEPS_AHEAD, steps, pair);   \
        _tile_loadd(4, packed + (s) * 2048, 64);                                         \
        _tile_loadd(5, packed + (s) * 2048 + 1024, 64);                                  \
        _tile_loadd(2, a0 + (s) * 64, row_bytes);                                        \
        _tile_dpbssd(0, 2, 4);                                                           \
        _tile_dpbssd(1, 2, 5);                                                           \
        if (pair) {                                                                      \
            _tile_loadd(3, a1 + (s) * 64, row_bytes);                                    \
            _tile_dpbssd(6, 3, 4);                                                       \
            _tile_dpbssd(7, 3, 5);                                                       \
        }                                                                                \
    } while (0)

/*
 * Max of `count` stored rows (16 lanes: packed_query_tiles' or packed_digit_tiles' columns)
 * into best (16, 16): row r is row `row + r` of a tier of `size` vectors per candidate, so it
 * belongs to candidate (row + r) / size of the block. bfloat16: a row's dot is the sum of its
 * lanes n and 8 + n; int8: of its lanes n, 5 + n and 10 + n, weighted, times row_scales[r];
 * wide int8: lanes n and 8 + n of row r % 16 of tile pair r / 16 (X, then Y: 512 lanes a
 * pair), plus lane n of Y, weighted. stored: (2, 16, 16) floats or int32, wide (2, 2, 16, 16).
 */
ME_AMX_INLINE void max_packed(const void *stored, int64_t count, int64_t row, int64_t size,
                              const float *row_scales, float *best, const int kind,
                              const int wide) {
    const __m512 weights = _mm512_set_ps(0.0f, 0x1p-14f, 0x1p-14f, 0x1p-14f, 0x1p-14f,
                                         0x1p-14f, 0x1p-7f, 0x1p-7f, 0x1p-7f, 0x1p-7f, 0x1p-7f,
                                         1.0f, 1.0f, 1.0f, 1.0f, 1.0f);
    const __m512i by5 = _mm512_add_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6,
                                                          5, 4, 3, 2, 1, 0),
                                         _mm512_set1_epi32(5)); /* past 15: wraps, unused */
    const __m512i by10 = _mm512_add_epi32(by5, _mm512_set1_epi32(5));
    int64_t candidate = row / size, within = row - candidate * size;
    __m512 top = _mm512_load_ps(best + candidate * 16);
    for (int64_t r = 0; r < count; r++) {
        __m512 dot; /* (16,), lanes 0-7 (bfloat16) or 0-4 (int8) */
        if (wide && kind == ME_KIND_F16) { /* one lane per query vector */
            dot = _mm512_load_ps((const float *)stored + r * 16);
        } else if (wide) {
            const int32_t *first_sums = (const int32_t *)stored + r / 16 * 512 + r % 16 * 16;
            const __m512 parts = _mm512_cvtepi32_ps(_mm512_load_si512(first_sums)); /* d0, d1 */
            const __m512 last = _mm512_cvtepi32_ps(_mm512_load_si512(first_sums + 256)); /* d2 */
            dot = _mm512_fmadd_ps(_mm512_shuffle_f32x4(parts, parts, 0x4E),
                                  _mm512_set1_ps(0x1p-7f), parts);
            dot = _mm512_fmadd_ps(last, _mm512_set1_ps(0x1p-14f), dot);
            dot = _mm512_mul_ps(dot, _mm512_set1_ps(row_scales[r]));
        } else if (kind == ME_KIND_I8) {
            const __m512 parts = _mm512_mul_ps(
                _mm512_cvtepi32_ps(_mm512_load_si512((const int32_t *)stored + r * 16)), weights);
            dot = _mm512_add_ps(_mm512_add_ps(parts, _mm512_permutexvar_ps(by5, parts)),
                                _mm512_permutexvar_ps(by10, parts));
            dot = _mm512_mul_ps(dot, _mm512_set1_ps(row_scales[r]));
        } else {
            const __m512 parts = _mm512_load_ps((const float *)stored + r * 16);
            dot = _mm512_add_ps(parts, _mm512_shuffle_f32x4(parts, parts, 0x4E));
        }
        top = _mm512_max_ps(top, dot);
        if (++within == size) {
            _mm512_store_ps(best + candidate * 16, top);
            within = 0;
            if (++candidate < 16) top = _mm512_load_ps(best + candidate * 16);
        }
    }
    if (within) _mm512_store_ps(best + candidate * 16, top);
}

/*
 * direct_block for few query vectors with packed B tiles, row tiles in pairs (C tiles 0-1):
 * - bfloat16, up to 8 vectors: packed_query_tiles, one product per row tile and step
 *   instead of two;
 * - float16, up to 8 vectors: the same tiles times both parts of each row tile, split into
 *   `decoded` (2, 4, 16, dim) a pair ahead (split_f16_pair); `wide`, 9-16 vectors: query_tiles'
 *   hi and lo parts in B tiles 4-5, reloaded every step, three products, one lane a vector;
 * - int8, up to 5 vectors: packed_digit_tiles, one product instead of three; `wide`, 6-8
 *   vectors: two tiles (B 4-5, reloaded every step) into C tiles 0-1 and 6-7.
 * With steps <= 4 and one B tile a step, the B tiles stay in tiles 4-7 for the whole call
 * (`resident`, loaded by the caller), else they rotate through tiles 4-7 so a load waits only
 * on the product of four steps before. Lanes 0-7 (bfloat16, float16, wide int8), 0-15 (wide
 * float16) or 0-4 (int8) of `best` (16, 16) hold the query vectors' maxima, int8 times
 * scale_of. bfloat16 and int8, with a pair of row tiles of at most ME_PACKED_PAIR_BYTES
 * (bfloat16 D <= 128, int8 D <= 256), fetch the pair's lines ME_PACKED_AHEAD bytes ahead
 * before its products: profiled, the first product of each pair waited on its tile loads
 * (one query, 100k, side by side: bfloat16 (8, 16) D = 128 15.0 ms vs 19.5, (4, 8) 6.7 vs
 * 8.8, (2, 4) 2.6 vs 2.9; int8 (8, 16) 9.4 vs 12.3, (4, 8) 2.9 vs 3.8; D = 256 int8 (8, 16)
 * 9.6 vs 12.7; 1 KiB ahead 3-7% slower than 2, 4 KiB from 1% faster to 7% slower). Whole
 * larger pairs at once did not pay (D = 1024, 30k: bfloat16 1.13-1.18x, int8 0.97-1.05x);
 * there int8 fetches, at each step, the lines of the step ME_STEPS_AHEAD later (past the
 * pair's end, the next pair's): one query, side by side, D = 1024, 30k, (4, 8) 9.7 ms vs 11.2,
 * (2, 4) 3.4 vs 4.0, wide (8, 16) 22.7 vs 26.5; D = 512, 50k, (4, 8) 8.8 vs 11.6, (8, 16)
 * 19.6 vs 24.3 (8 steps ahead 1.04-1.21x the time of 4; bfloat16 took 1.01-1.03x as long
 * with it, so it fetches nothing there).
 * direct_block's 16 KiB ahead in every tier also lost (bfloat16 one query (8, 16), D = 128:
 * 21-22.7 ms, 19.6-20.0 without; into L2 only 1.03-1.05x).
 * Also measured side by side and not kept: two steps' A tiles in flight (tiles 2-5, B tiles
 * reloaded every step) 1.0-1.02x at D = 128; a max over each candidate's rows with two
 * accumulators instead of one running max 1.0-1.12x. Without the max (wrong scores, timing
 * only) one query (8, 16) took 18 of its 20 ms: the tile loads bound it.
 * dots: (2, 32, 16) floats or int32, wide (2, 2, 2, 16, 16).
 */
ME_AMX_INLINE void direct_packed(const Layout *layout, int64_t tiers, int64_t first,
                                 const char *packed, int64_t steps, int resident,
                                 const float *scale_of, float *dots, float *best,
                                 uint16_t *decoded, const int kind, const int wide) {
    const int64_t row_bytes = layout->dim * element_bytes_of(kind);
    const int64_t part_bytes = 16 * row_bytes; /* float16: hi, lo of a0, then of a1 */
    const int64_t values = 16 * layout->dim;   /* float16 values of one row tile */
    /* what is fetched ahead: a whole small pair before its products (bfloat16, int8), or
       for larger int8 pairs each step's lines ME_STEPS_AHEAD steps before that step */
    const int pair_fetch = kind != ME_KIND_F16 && 32 * row_bytes <= ME_PACKED_PAIR_BYTES;
    const int step_fetch = kind == ME_KIND_I8 && !pair_fetch;
    int64_t ahead_t = 0, ahead_tile = 0;       /* float16: the pair decoded next */
    if (kind == ME_KIND_F16) split_f16_pair(layout, first, &ahead_t, &ahead_tile, decoded);
    const float *pending = NULL, *pending_scales = NULL; /* the pair whose max is to take */
    int64_t pending_rows = 0, pending_row = 0, pending_size = 1, pairs = 0;
    for (int64_t i = 0; i < 16 * 16; i += 16) _mm512_store_ps(best + i, _mm512_set1_ps(-INFINITY));
    for (int64_t t = 0; t < tiers; t++) {
        const int64_t size = layout->sizes[t];
        const char *base = layout->base[t] + first * size * row_bytes; /* (16 * size, dim) */
        for (int64_t tile = 0; tile < size; tile += 2) {
            const int pair = tile + 1 < size;
            const char *a0 = base + tile * 16 * row_bytes, *a1 = a0 + 16 * row_bytes;
            if (pair_fetch)
                for (int64_t i = 0; i < (pair ? 32 : 16) * row_bytes; i += 64)
                    _mm_prefetch(a0 + i + ME_PACKED_AHEAD, _MM_HINT_T0);
            _tile_zero(0);
            _tile_zero(1);
            int64_t s = 0;
            /* float16: this pair's parts were split one pair ago (below) */
            const char *parts = (const char *)(decoded + (pairs % 2) * 4 * values);
            if (wide && kind == ME_KIND_I8) {
                _tile_zero(6);
                _tile_zero(7);
                for (; s < steps; s++) ME_WIDE_STEP(s);
            } else if (wide) {
                for (; s < steps; s++) ME_F16_WIDE_STEP(s);
            }
            for (; s + 4 <= steps; s += 4) {
                ME_PACKED_STEP(4, s);
                ME_PACKED_STEP(5, s + 1);
                ME_PACKED_STEP(6, s + 2);
                ME_PACKED_STEP(7, s + 3);
            }
            if (s < steps) ME_PACKED_STEP(4, s);
            if (s + 1 < steps) ME_PACKED_STEP(5, s + 1);
            if (s + 2 < steps) ME_PACKED_STEP(6, s + 2);
            /* float16: the next pair's parts, split while this pair's products run (a tile
               load waits for the stores before it) */
            if (kind == ME_KIND_F16 && ahead_t < tiers)
                split_f16_pair(layout, first, &ahead_t, &ahead_tile,
                               decoded + ((pairs + 1) % 2) * 4 * values);
            /* the max of the pair before, whose scores were stored one pair ago: its loads
               then find the stores done instead of waiting for them to leave the pipeline */
            const int four = wide && kind == ME_KIND_I8; /* C tiles 0-1 and 6-7 */
            float *stored = dots + (pairs++ % 2) * (four ? 1024 : 512); /* (32, 16) or X, Y */
            _tile_stored(0, stored, 64); /* tile numbers are immediates */
            if (four) {
                _tile_stored(1, stored + 256, 64);
                if (pair) _tile_stored(6, stored + 512, 64);
                if (pair) _tile_stored(7, stored + 768, 64);
            } else if (pair) {
                _tile_stored(1, stored + 256, 64);
            }
            if (pending)
                max_packed(pending, pending_rows, pending_row, pending_size, pending_scales,
                           best, kind, wide);
            pending = stored;
            pending_rows = pair ? 32 : 16;
            pending_row = tile * 16;
            pending_size = size;
            if (kind == ME_KIND_I8) pending_scales = layout->scales[t] + (first * size + tile * 16);
        }
    }
    if (pending)
        max_packed(pending, pending_rows, pending_row, pending_size, pending_scales, best, kind,
                   wide);
    if (kind == ME_KIND_I8) /* the query scales, positive, after the max */
        for (int64_t c = 0; c < 16; c++)
            _mm512_store_ps(best + c * 16, _mm512_mul_ps(_mm512_load_ps(best + c * 16),
                                                         _mm512_load_ps(scale_of)));
}

/*
 * The int8 direct form, dim % 64 == 0 and whole tiers: as direct_block, one row tile of 16
 * stored vectors at a time (three int32 C tiles, one per query digit, and three B tiles leave
 * no room for a pair), products exact in int32 (TDPBSSD); each row's three sums are combined
 * in float32 (d0 + (d1 + d2 / 128) / 128), scaled by the row's int8 scale and maxed into
 * `best` (16, lanes), which each lane's query scale multiplies at the end. sums: (3, 16, 16)
 * int32.
 */
ME_AMX_INLINE void direct_block_i8(const Layout *layout, int64_t tiers, int64_t first,
                                   int ahead, const int8_t *digits, const float *scale_of,
                                   int64_t blocks, int64_t steps, int64_t lanes, int32_t *sums,
                                   float *best) {
    const int64_t row_bytes = layout->dim;
    const __m512 step = _mm512_set1_ps(1.0f / 128.0f);
    for (int64_t i = 0; i < 16 * lanes; i += 16)
        _mm512_store_ps(best + i, _mm512_set1_ps(-INFINITY));
    for (int64_t t = 0; t < tiers; t++) {
        const int64_t size = layout->sizes[t];
        const int8_t *base = (const int8_t *)layout->base[t] + first * size * row_bytes;
        const float *row_scales = layout->scales[t] + first * size; /* (16 * size,) */
        const int64_t next = ahead ? ME_DIRECT_AHEAD : 0;
        for (int64_t tile = 0; tile < size; tile++) {
            const int8_t *a0 = base + tile * 16 * row_bytes; /* (16, dim) */
            for (int64_t b = 0; b < blocks; b++) {
                const int8_t *columns = digits + b * steps * 3 * 1024;
                _tile_zero(0);
                _tile_zero(1);
                _tile_zero(4);
                for (int64_t s = 0; s < steps; s++) {
                    if (next && b == 0)
                        for (int r = 0; r < 16; r++)
                            _mm_prefetch((const char *)a0 + r * row_bytes + s * 64 + next,
                                         _MM_HINT_T0);
                    _tile_loadd(2, a0 + s * 64, row_bytes);
                    _tile_loadd(5, columns + s * 3 * 1024, 64);
                    _tile_loadd(6, columns + s * 3 * 1024 + 1024, 64);
                    _tile_loadd(7, columns + s * 3 * 1024 + 2048, 64);
                    _tile_dpbssd(0, 2, 5);
                    _tile_dpbssd(1, 2, 6);
                    _tile_dpbssd(4, 2, 7);
                }
                _tile_stored(0, sums, 64);
                _tile_stored(1, sums + 256, 64);
                _tile_stored(4, sums + 512, 64);
                for (int64_t r = 0; r < 16; r++) {
                    const int64_t row = tile * 16 + r;
                    __m512 low = _mm512_cvtepi32_ps(_mm512_load_si512(sums + 512 + r * 16));
                    __m512 mid = _mm512_cvtepi32_ps(_mm512_load_si512(sums + 256 + r * 16));
                    __m512 high = _mm512_cvtepi32_ps(_mm512_load_si512(sums + r * 16));
                    __m512 dot = _mm512_fmadd_ps(_mm512_fmadd_ps(low, step, mid), step, high);
                    dot = _mm512_mul_ps(dot, _mm512_set1_ps(row_scales[row]));
                    float *top = best + row / size * lanes + b * 16; /* (16,) */
                    _mm512_store_ps(top, _mm512_max_ps(_mm512_load_ps(top), dot));
                }
            }
        }
    }
    for (int64_t c = 0; c < 16; c++) /* the query scales, positive, after the max */
        for (int64_t b = 0; b < lanes; b += 16)
            _mm512_store_ps(best + c * lanes + b, _mm512_mul_ps(_mm512_load_ps(best + c * lanes + b),
                                                                _mm512_load_ps(scale_of + b)));
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
    uint16_t *query = aligned_alloc(64, (size_t)(blocks * steps * 2 * 1024));
    /* hi, then lo; and at least direct_packed's float16 parts, (2, 4, 16, padded) */
    const int64_t part_rows = 2 * rows > 128 ? 2 * rows : 128;
    uint16_t *hi = aligned_alloc(64, (size_t)(part_rows * padded * 2));
    /* (rows, lanes), and at least direct_packed's two wide pairs */
    float *dots = aligned_alloc(64, (size_t)((rows * lanes > 2048 ? rows * lanes : 2048) * 4));
    const int64_t best_rows = (per_block + 15) / 16 * 16; /* whole transposes of 16 */
    float *best = aligned_alloc(64, (size_t)(best_rows * lanes * 4));
    float *flipped = aligned_alloc(64, (size_t)(lanes * 16 * 4));
    float *scales = malloc((size_t)rows * sizeof(float));
    if (!query || !hi || !dots || !best || !flipped || !scales) {
        free(query); free(hi); free(dots); free(best); free(flipped); free(scales);
        return -2;
    }
    uint16_t *lo = hi + rows * padded;
    memset(hi, 0, (size_t)(2 * rows * padded * 2)); /* dims past `dim` stay zero */
    query_tiles(queries, vectors, dim, steps, query);
    /* the direct forms need every row of a block's tier stretch to be among the first r_c */
    const int64_t tiers = amx_reads_directly(kind, dim) || amx_streams_f16(kind, dim, vectors)
                              ? whole_tiers(layout->sizes, ME_MAX_TIERS, r_c)
                              : 0;
    if (tiers) { /* whole blocks of 16 directly, the rest decoded below */
        const int64_t digit_steps = dim / 64, end = start + (stop - start) / 16 * 16;
        int8_t *digits = NULL; /* int8: the query digits, their scales, one tile's sums */
        float *scale_of = NULL;
        int32_t *sums = NULL;
        if (kind == ME_KIND_I8) {
            digits = aligned_alloc(64, (size_t)(blocks * digit_steps * 3 * 1024));
            scale_of = aligned_alloc(64, (size_t)(lanes * 4));
            sums = aligned_alloc(64, 3 * 256 * sizeof(int32_t));
            if (!digits || !scale_of || !sums) {
                free(digits); free(scale_of); free(sums);
                free(query); free(hi); free(dots); free(best); free(flipped); free(scales);
                return -2;
            }
            query_digits(queries, vectors, dim, digit_steps, digits, scale_of);
        }
        /* at most 8 query vectors, float16 16: direct_packed (int8 from 6 vectors and float16
           from 9 in its wide forms) */
        const int packed = vectors <= 8 || (kind == ME_KIND_F16 && vectors <= 16);
        const int wide = packed && vectors > (kind == ME_KIND_I8 ? 5 : 8);
        const int64_t packed_steps = kind == ME_KIND_I8 ? digit_steps : steps;
        const int resident = !wide && packed_steps <= 4;
        char *packed_query = NULL; /* (packed_steps, 1024 bytes), wide 2048 */
        if (packed && !(wide && kind == ME_KIND_F16)) { /* wide float16: query_tiles' own */
            packed_query = aligned_alloc(64, (size_t)(packed_steps * (wide ? 2048 : 1024)));
            if (!packed_query) {
                free(digits); free(scale_of); free(sums);
                free(query); free(hi); free(dots); free(best); free(flipped); free(scales);
                return -2;
            }
            if (kind == ME_KIND_I8)
                packed_digit_tiles(digits, digit_steps, wide, (int8_t *)packed_query);
            else
                packed_query_tiles(query, steps, (uint16_t *)packed_query);
            if (resident) {
                _tile_loadd(4, packed_query, 64);
                if (packed_steps > 1) _tile_loadd(5, packed_query + 1024, 64);
                if (packed_steps > 2) _tile_loadd(6, packed_query + 2048, 64);
                if (packed_steps > 3) _tile_loadd(7, packed_query + 3072, 64);
            }
        }
        /* each direct_packed call with constant kind and wide: its inlined copy keeps only
           its own branches */
        for (int64_t first = start; first < end; first += 16) {
            if (wide && kind == ME_KIND_F16)
                direct_packed(layout, tiers, first, (const char *)query, steps, 0, scale_of,
                              dots, best, hi, ME_KIND_F16, 1);
            else if (wide)
                direct_packed(layout, tiers, first, packed_query, packed_steps, 0, scale_of,
                              dots, best, hi, ME_KIND_I8, 1);
            else if (packed && kind == ME_KIND_I8)
                direct_packed(layout, tiers, first, packed_query, packed_steps, resident,
                              scale_of, dots, best, hi, ME_KIND_I8, 0);
            else if (packed && kind == ME_KIND_F16)
                direct_packed(layout, tiers, first, packed_query, packed_steps, resident,
                              scale_of, dots, best, hi, ME_KIND_F16, 0);
            else if (packed)
                direct_packed(layout, tiers, first, packed_query, packed_steps, resident,
                              scale_of, dots, best, hi, ME_KIND_BF16, 0);
            else if (kind == ME_KIND_I8)
                direct_block_i8(layout, tiers, first, first + 32 <= end, digits, scale_of,
                                blocks, digit_steps, lanes, sums, best);
            else
                direct_block(layout, tiers, first, first + 32 <= end, query, blocks, steps,
                             lanes, dots, best);
            write_scores(best, 16, first, num_queries, r_q, lanes, flipped, scores, stride);
        }
        free(digits); free(scale_of); free(sums); free(packed_query);
        start = end;
    }
    for (int64_t first = start; first < stop; first += per_block) {
        const int64_t count = stop - first < per_block ? stop - first : per_block;
        decode_block(layout, r_c, first, per_block, stop, padded, hi, lo, scales, kind);
        for (int64_t b = 0; b < blocks; b++)
            score_tiles(hi, lo, tiles, padded, steps, query + b * steps * 1024, dots + b * 16,
                        lanes, kind);
        reduce_block(dots, scales, r_c, first, count, num_queries, r_q, lanes, best, flipped,
                     scores, stride, kind);
    }
    free(query); free(hi); free(dots); free(best); free(flipped); free(scales);
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
