/*
 * The scoring kernel at 16 floats per vector register: AVX-512F (Intel Xeon since Skylake-SP,
 * AMD since Zen 4), twice the FLOPs per instruction of the AVX2 copy. The body is
 * _native_lanes.h; _native.c runs this copy where the CPU and OS support it.
 */
#include "_native_common.h"

#ifdef ME_HAVE_AVX2
#define ME_W 16
#define VEC __m512
#define ME_TARGET __attribute__((target("avx512f,avx2,fma,f16c")))
#define ME_INLINE static inline __attribute__((always_inline)) ME_TARGET
#define ME_RANGE_NAME metaembed_score_range_avx512

#define V_ZERO() _mm512_setzero_ps()
#define V_LOAD(p) _mm512_load_ps(p)
#define V_LOADU(p) _mm512_loadu_ps(p)
#define V_STORE(p, v) _mm512_store_ps(p, v)
#define V_STOREU(p, v) _mm512_storeu_ps(p, v)
#define V_SET1(x) _mm512_set1_ps(x)
#define V_BCAST(p) _mm512_set1_ps(*(p))
#define V_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define V_MAX(a, b) _mm512_max_ps(a, b)
#define V_MUL(a, b) _mm512_mul_ps(a, b)

/* The two 8-lane halves added: same total over the lanes. */
ME_INLINE __m256 to_8(__m512 v) {
    __m256 high = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    return _mm256_add_ps(_mm512_castps512_ps256(v), high);
}

/* Sixteen stored values from offset d, as float32 (int8 without its scale). */
ME_INLINE __m512 load_lanes(const void *vector, int64_t d, const int kind) {
    if (kind == ME_KIND_F32) return _mm512_loadu_ps((const float *)vector + d);
    if (kind == ME_KIND_F16)
        return _mm512_cvtph_ps(
            _mm256_loadu_si256((const __m256i *)((const uint16_t *)vector + d)));
    if (kind == ME_KIND_BF16) {
        __m256i bits = _mm256_loadu_si256((const __m256i *)((const uint16_t *)vector + d));
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
    }
    __m128i bytes = _mm_loadu_si128((const __m128i *)((const int8_t *)vector + d));
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes));
}

/* transposed query floats kept hot per pass: a batch's candidates are read once per pass, and
   with 2 MiB of L2 a 1 MiB group beat 128 KiB by 1.17x (16 queries, 16x64, D = 1024) */
#define ME_QUERY_GROUP_BYTES (1024 * 1024)
#define ME_PACKED_FEW 1

#define V_ADD(a, b) _mm512_add_ps(a, b)
#define V_PERMUTE(v, imm) _mm512_permute_ps(v, imm) /* within 128-bit lanes */
#define V_SET1_PD(x) _mm512_castpd_ps(_mm512_set1_pd(x))
#define V_BCAST4(p) _mm512_broadcast_f32x4(_mm_loadu_ps(p))

#include "_native_lanes.h"
#endif
