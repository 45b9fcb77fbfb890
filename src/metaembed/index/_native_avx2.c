/*
 * The scoring kernel at 8 floats per vector register: AVX2, FMA and F16C (x86-64 CPUs since
 * about 2013). The body is _native_lanes.h; _native.c picks this or the AVX-512 copy.
 */
#include "_native_common.h"

#ifdef ME_HAVE_AVX2
#define ME_W 8
#define VEC __m256
#define ME_TARGET ME_AVX2_TARGET
#define ME_INLINE static inline __attribute__((always_inline)) ME_TARGET
#define ME_RANGE_NAME metaembed_score_range_avx2

#define V_ZERO() _mm256_setzero_ps()
#define V_LOAD(p) _mm256_load_ps(p)
#define V_LOADU(p) _mm256_loadu_ps(p)
#define V_STORE(p, v) _mm256_store_ps(p, v)
#define V_STOREU(p, v) _mm256_storeu_ps(p, v)
#define V_SET1(x) _mm256_set1_ps(x)
#define V_BCAST(p) _mm256_broadcast_ss(p)
#define V_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define V_MAX(a, b) _mm256_max_ps(a, b)
#define V_MUL(a, b) _mm256_mul_ps(a, b)

ME_INLINE __m256 to_8(__m256 v) { return v; }

/* Eight stored values from offset d, as float32 (int8 without its scale). */
ME_INLINE __m256 load_lanes(const void *vector, int64_t d, const int kind) {
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

#define ME_QUERY_GROUP_BYTES (128 * 1024) /* transposed query floats kept hot per pass */
#define ME_PACKED_FEW 0 /* lane groups only at 16 lanes: at 8 the grouped form was measured */

#define V_ADD(a, b) _mm256_add_ps(a, b)
#define V_PERMUTE(v, imm) _mm256_permute_ps(v, imm) /* within 128-bit lanes */
#define V_SET1_PD(x) _mm256_castpd_ps(_mm256_set1_pd(x))
#define V_BCAST4(p) _mm256_broadcast_ps((const __m128 *)(p))

#include "_native_lanes.h"
#endif
