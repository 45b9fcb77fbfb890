/*
 * metaembed native scoring kernel: budgeted MaxSim over tiered storage.
 *
 *   scores[q, n] = sum_{i < r_q} max_{j < r_c} <query[q, i], candidate[n, j]>
 *
 * x86-64 with AVX2, FMA and F16C (checked at run time by metaembed_native_supported),
 * AVX-512F where the CPU and OS have it, and AMX tiles (_native_amx.c: Linux on Xeon since
 * Sapphire Rapids) for the shapes where they pay (amx_pays below); every other platform
 * builds a stub that reports itself unsupported, and the Python side falls back to the numba
 * or torch backend. Loaded with ctypes (the calls release the GIL); the Python module object
 * exists only so that setuptools can build and install these files.
 *
 * Files: this one checks the CPU, picks the copy, splits the candidates over threads and
 * exports the entry points; _native_amx.c is the AMX copy; _native_lanes.h is the vector
 * kernel, written once for a vector of ME_W floats and compiled twice, by _native_avx2.c
 * (8 floats) and _native_avx512.c (16 floats); _native_common.h holds what they all need.
 * Computation is float32 at both widths; the AMX copy multiplies bfloat16 parts of split
 * inputs and sums in float32 (within 2^-18 per product).
 *
 * Forms, chosen by r_c and M = num_queries * r_q, the query vectors of one call (W below is
 * the vector width, 8 or 16 floats):
 *
 * - "dims along lanes" (M <= 8, the memory-bound budgets and one query up to (8, 16)): stored
 *   values are decoded W at a time straight from the tier inside the dot product (no
 *   buffer) and horizontal sums close each tile. r_c = 1 with M <= 4: MB x 4 tiles whose
 *   four candidates come from four sub-ranges (more memory streams); r_c > 1 with M <= 2:
 *   MB x 4 tiles of one candidate's vectors; otherwise ("grouped"): groups of 4 query vectors
 *   x tiles of 3 candidate vectors (r_c = 1: the first vectors of 3 candidates), summed into
 *   one 4-lane vector per candidate vector so the max over candidate vectors is lane-wise,
 *   dims in blocks that keep the queries in L1. At r_c > 1 they fetch the rows of a
 *   candidate about 16 KiB further on while they compute (ahead_candidates), and the
 *   consecutive r_c = 1 form the next tile's;
 * - "query vectors along lanes" (everything else: batches, r_q = 16): the queries are
 *   transposed once per call into blocks of W vectors, (dims, W) each; each candidate's r_c
 *   vectors are decoded into packed tiles of JB rows, (dims/W, JB, W), and 2x4 or 1x8 tiles
 *   of W-lane accumulators are updated with one broadcast candidate value per FMA (an outer
 *   product: no horizontal sums, and the max over candidate vectors is a lane-wise max). The
 *   next candidate is packed inside the micro-kernel loop and the one after is prefetched;
 *   per-lane results are staged and written out through 8x8 transposes. With one block of
 *   query vectors the next tile (not the next candidate) is packed alongside;
 * - "lane groups" (AVX-512 only: 3-8 query vectors at r_c > 1, 5-8 at r_c = 1, where
 *   cpu_rules and lane_groups_pay take them): the packed form with P = 2 or 4 consecutive
 *   dims per query vector in one 16-lane block, so each broadcast carries P candidate values
 *   and no lane idles; the P lanes are summed before the max. At 8 lanes these shapes stay
 *   in the grouped dims-along-lanes form.
 *
 * A candidate vector tile that runs past r_c repeats the last vector (a repeated vector
 * cannot change a max); with r_c = 1, several candidates fill a tile instead (from separate
 * sub-ranges in the first form, consecutive in the second). Measurements behind each choice:
 * docs/index.md.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "_native_common.h"
#ifdef ME_HAVE_AVX2
#include <cpuid.h>
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

#define ME_ISA_AVX2 1
#define ME_ISA_AVX512 2
#define ME_ISA_AMX 4
#define ME_ISA_VNNI 8
#define ME_LANE_GROUPS_ON 16 /* with an isa: the lane-groups choice held, see metaembed_native_score */
#define ME_LANE_GROUPS_OFF 32

/* The instruction sets this CPU and OS can run the kernel with: ME_ISA_* bits. */
ME_EXPORT int metaembed_native_instruction_sets(void) {
    if (!metaembed_native_supported()) return 0;
#ifdef ME_HAVE_AVX2
    /* libgcc's check includes the OS's support for the AVX-512 register state (XCR0) */
    const int avx512 = __builtin_cpu_supports("avx512f");
    const int vnni = avx512 && __builtin_cpu_supports("avx512vnni") &&
                     __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    return ME_ISA_AVX2 | (avx512 ? ME_ISA_AVX512 : 0) |
           (avx512 && metaembed_amx_usable() ? ME_ISA_AMX : 0) | (vnni ? ME_ISA_VNNI : 0);
#else
    return 0;
#endif
}

#ifdef ME_HAVE_AVX2
/* One thread's share: candidates [start, stop). */
typedef struct {
    int (*range)(ME_RANGE_ARGS); /* the instruction set's kernel */
    const float *queries;
    int64_t num_queries, r_q, r_c, start, stop, stride;
    Layout *layout;
    int kind, status;
    float *scores;
} RangeJob;

static void *run_range(void *argument) {
    RangeJob *job = argument;
    if (job->start < job->stop)
        job->status = job->range(job->queries, job->num_queries, job->r_q, job->layout,
                                 job->r_c, job->kind, job->start, job->stop, job->scores,
                                 job->stride);
    return NULL;
}

/*
 * Whether the AMX copy beats the AVX-512 one for M query vectors at r_c (`whole`: r_c ends at
 * a tier's end, where the AMX copy reads bfloat16 at D % 32 == 0 and int8 at D % 64 == 0
 * straight from the tiers, "direct": amx_reads_directly).
 * Python-harness runs side by side on the 2-core Xeon, 2026-12-03, N = 100k at D = 128 and
 * 30k at D = 1024 (ratios are AMX time / AVX-512 time; docs/index.md):
 * - direct bfloat16: from 16 vectors at every r_c ((1, 1) x 16 queries 0.58, (16, 64) one
 *   query 0.70); up to 8 vectors the packed form (direct_packed), from 5 vectors at every
 *   r_c (one query (8, 16) D = 128 0.86-0.90, D = 1024 0.69; (6, 16) 0.82, (8, 64) 0.67;
 *   (1, 1) x 6 queries 0.46), from 4 at r_c <= 4 ((1, 1) x 4 0.90, D = 1024 0.73; (2, 4) x 2
 *   0.62-0.66), at r_c >= 32 ((4, 64) 0.70), at D >= 512 ((4, 8) 0.81-0.82) and, since
 *   direct_packed fetches small pairs ahead, at D <= 128 ((4, 8) 0.88, (4, 16) 0.86); one
 *   query (4, 8) at D = 256 stays on AVX-512 (1.05-1.10);
 * - int8, whose decoding the FMA copy pays per value: from 8 vectors at every r_c
 *   (0.39-0.80; direct (8, 16) one query 0.69), from 4 at r_c = 2..4 (0.52-0.56) and, direct,
 *   at every r_c (up to 5 vectors the packed form: (4, 8) one query 0.77, D = 1024 0.60,
 *   (5, 16) 0.61); direct from 2 vectors at r_c <= 4 up to D = 512 ((2, 4) one query 0.75,
 *   D = 256 0.88, D = 512 0.82-0.86 since direct_packed fetches ahead, before 1.05-1.22x;
 *   (1, 1) x 2 queries 0.89-0.94, x 3 0.80; at D = 1024 (2, 4) is a tie, 0.99-1.01, so it
 *   stays on AVX-512, as do one query (1, 1): 1.14-1.17, and (1, 4): 0.93-1.12), and from
 *   3 at every r_c and D ((3, 8) 0.42 at D = 128, 0.63 at 512, 0.52 at 1024; (3, 16) 0.69;
 *   2 vectors at r_c > 4 stay: (2, 8) 0.79-1.08, (2, 16) 1.0-1.1);
 * - float16 in tier order (amx_streams_f16: whole tiers, D % 32 == 0, up to 16 vectors) at
 *   D <= 128: from 6 vectors at every r_c (one query (8, 16) 0.83, (6, 16) 0.83, (8, 64) 0.87,
 *   (16, 16) 0.72, (16, 64) 0.80; (1, 1) x 6 queries 0.55, x 12 0.58, x 16 0.77), from 4 at
 *   r_c = 2..4 ((2, 4) x 2 0.58-0.68, x 4 0.48-0.59); one query (4, 8) 1.10 and (2, 4)
 *   1.1-1.5 stay on AVX-512, as do up to 8 vectors at D = 1024 (one query (8, 16) 1.29,
 *   (1, 1) x 8 1.25) except at r_c = 2..4 from 8 vectors, below (one query (16, 64) at
 *   D = 1024, 0.80, is on the tiles by the 16-vector rule below; (1, 1) x 16 there 0.99);
 * - float16 (and bfloat16 that must be decoded): from 16 vectors at r_c >= 4 (0.40-0.94),
 *   from 8 at r_c = 2..4 (0.72-0.80); at r_c = 1 only from 32 vectors at D >= 1024 (0.72;
 *   16 vectors 0.96-1.1 at D = 1024, 8-16 at D = 128 0.79-1.05).
 */
static int amx_pays(int kind, int whole, int64_t vectors, int64_t r_c, int64_t dim) {
    const int few = r_c >= 2 && r_c <= 4, direct = whole && amx_reads_directly(kind, dim);
    if (kind == ME_KIND_F32) return 0;
    if (kind == ME_KIND_BF16 && direct)
        return vectors >= 5 ||
               (vectors >= 4 && (r_c <= 4 || r_c >= 32 || dim <= 128 || dim >= 512));
    if (kind == ME_KIND_I8)
        return vectors >= 8 || (vectors >= 4 && (few || direct)) ||
               (direct && (vectors >= 3 || (vectors >= 2 && r_c <= 4 && dim <= 512)));
    if (whole && amx_streams_f16(kind, dim, vectors) && dim <= 128 &&
        (vectors >= 6 || (vectors >= 4 && few)))
        return 1;
    if (r_c == 1) return vectors >= 32 && dim >= 1024;
    return (vectors >= 16 && r_c >= 4) || (vectors >= 8 && few);
}

/*
 * The AMD family from CPUID leaf 1 (base plus extended family): 0x19 for Zen 3 and Zen 4,
 * 0x1A for Zen 5; 0 on other vendors. Read once: CPUID traps to the hypervisor in a VM (about
 * 11 us per search on the Zen 5 KVM guest, as much as scoring 400 candidates at (2, 4)).
 */
static int amd_family(void) {
    static int family = -1; /* threads racing here store the same value */
    if (family < 0) {
        unsigned eax = 0, ebx, ecx, edx;
        __builtin_cpu_init();
        const int amd = __builtin_cpu_is("amd") && __get_cpuid(1, &eax, &ebx, &ecx, &edx);
        const int base = (eax >> 8) & 0xF;
        family = !amd ? 0 : base == 0xF ? base + (int)((eax >> 20) & 0xFF) : base;
    }
    return family;
}

/*
 * The measured rules that depend on the CPU, not the shape (docs/index.md):
 *
 * - half_width: AMD family 0x19 with AVX-512 (Zen 4, which runs a 512-bit instruction in two
 *   passes on 256-bit units; 2-core EPYC VM, 2026-12-04, float16, Python harness side by
 *   side): the dims-along-lanes forms with 3 to 8 query vectors at r_c > 1 ran faster on the
 *   AVX2 copy (one query (4, 8) D = 128 7.4-7.5 ms vs 9.5-10.5 on AVX-512, (8, 16) 21.7 vs
 *   30.1; D = 1024, 30k: (4, 8) 21.5 vs 23.5, (8, 16) 58.9 vs 60.0), and fetching the next
 *   rows into L2 rather than L1 paid at one query (2, 4) (D = 1024: 6.7-7.4 ms vs 11.4;
 *   D = 128 0.89-0.96x in two runs; other shapes within noise);
 * - lane_groups: the AVX-512 copy's lane-groups form, kept everywhere but AMD from family
 *   0x1A (Zen 5: 2-core EPYC VM, family 0x1A model 2, 2026-12-06, kernel_ab, float16, one
 *   query, 100k, AVX-512 with and without lane groups: the grouped form ran (4, 8) D = 128
 *   4.3 ms vs 6.4-6.5, D = 1024 28.4-38.4 vs 48.1-49.8, (3, 8) 5.2 vs 6.9-7.1, (5, 1) 1.3
 *   vs 1.4-1.5, (8, 1) 1.6-1.7 vs 1.9-2.1, and tied at (6, 16), (8, 16) and (8, 64)). There
 *   AVX-512 beat AVX2 at (8, 16) (D = 128 13.9-14.4 ms vs 15.8-16.0, D = 1024 100-110 vs
 *   114-123) and (16, 64) (78 vs 122), and tied at (4, 8) in the grouped form (4.3-4.4 ms
 *   both), so Zen 5 takes the AVX-512 copy and fetches into L1, as Intel CPUs do ((2, 4)
 *   D = 128 2.22-2.39 ms vs 2.41-2.68 fetching into L2, (4, 8) D = 1024 28.4-33.1 vs
 *   38.1-39.2). Intel CPUs, AMD ones without AVX-512 (Zen 3, measured before), and AMD ones
 *   after family 0x1A (unmeasured) take the Zen 5 rules but for Intel's lane groups.
 */
typedef struct {
    int half_width;  /* Zen 4 */
    int lane_groups; /* not AMD from family 0x1A */
} CpuRules;

static CpuRules cpu_rules(int available) {
    const int family = amd_family(), avx512 = (available & ME_ISA_AVX512) != 0;
    const CpuRules rules = {avx512 && family == 0x19, family < 0x1A};
    return rules;
}

/*
 * Whether the VNNI copy (_native_vnni.c: int8 with up to 4 query vectors) beats the vector
 * copies. Measured on Zen 4 (2-core EPYC VM, 2026-12-06, one query, Python harness side by
 * side with the AVX2 copy these shapes took before; docs/index.md): 3 vectors at r_c > 1
 * ((3, 8) D = 128 5.8 vs 6.7 ms; (3, 16) D = 512 22.0 vs 33.1) and 4 from D = 512 ((4, 8)
 * D = 512 10.3 vs 16.0, D = 1024 11.6 vs 17.7); one query (4, 8) at D = 128 (7.2 vs 6.7)
 * keeps the AVX2 copy, and 1-2 vectors at r_c > 1 keep the AVX-512 copy (an earlier
 * two-digit build of this copy, which does less work per value, already tied or lost there:
 * (2, 4) D = 128 2.95 vs 2.67 ms). One vector at r_c = 1 (vnni_first_one: four candidate
 * streams, rows walked by pointer) runs here: (1, 1) D = 128, 100k, 0.29 vs 0.43 ms, D = 1024
 * 2.85 vs 2.84 (memory-bound; one thread in L2 18.7 vs 36.6 ns per candidate). Zen 5
 * (kernel_ab, 2026-12-06, against its AVX-512 copy) keeps these routes: (1, 1) D = 128
 * 0.40-0.45 vs 0.47-0.52 ms, (3, 8) 4.45-4.49 vs 5.17-5.25, 2 vectors still lose ((2, 4)
 * 2.46-2.47 vs 2.01-2.02); 50k at D = 1024: (1, 1) 1.27-1.33 vs 1.58-1.64, (3, 8) 10.3 vs
 * 11.8, (4, 8) 14.3-14.7 vs 13.1 (within this VM's noise, so the rule stands). An Intel Xeon
 * without AMX (2-core VM, family 6 model 0xCF, 2026-12-08, kernel_ab, one query, 25 rounds,
 * VNNI against the AVX-512 copy's best form) takes the same routes: (1, 1) D = 128 0.57 vs
 * 0.79 ms, D = 256 0.79 vs 0.94, D = 1024 (25k) 0.65 vs 1.08; (3, 8) D = 128 5.8 vs 7.1,
 * D = 512 4.1 vs 5.1, D = 1024 9.4 vs 10.8; (4, 8) D = 512 6.7 vs 6.5-9.4, D = 1024 9.8 vs
 * 10.5, but D = 128 8.4 vs 6.9-7.8 and D = 256 7.9 vs 5.7; (2, 4) D = 1024 a tie. Where AMX
 * runs, it is asked first (amx_pays).
 */
static int vnni_pays(int kind, int64_t vectors, int64_t r_c, int64_t dim) {
    return kind == ME_KIND_I8 && dim <= ME_VNNI_MAX_DIM &&
           ((vectors == 1 && r_c == 1) ||
            (r_c > 1 && (vectors == 3 || (vectors == 4 && dim >= 512))));
}

/*
 * Whether the AVX-512 copy takes the lane-groups form for M query vectors at r_c where the CPU
 * keeps it (rules.lane_groups). Where it does, 3-4 query vectors of float16 or bfloat16 at
 * r_c > 1 still take the grouped form (2-core Xeon VM, family 6 model 0xCF, no AMX,
 * 2026-12-08, kernel_ab, one query, lane groups / grouped, 25 rounds: float16 (3, 8) D = 128
 * 9.04 / 7.83 ms, (4, 8) 8.11 / 7.66, (4, 16) 21.7 / 19.2; D = 1024, 25k: (3, 8) 20.2 /
 * 16.5, (4, 8) 20.9 / 17.3, (4, 16) 39.1 / 32.7; bfloat16 1.09-1.25x the same way), and
 * so do int8's from D = 256 ((4, 8) D = 256 6.2 / 5.7, D = 512 9.4 / 6.5, D = 1024 14.4 /
 * 11.8; (4, 16) 1.08x, 1.29x, 1.47x; at D = 128 mixed, 0.90-1.13x in two runs;
 * three int8 vectors mostly go to the VNNI copy, vnni_pays). 5-8 vectors keep the lane groups
 * ((8, 16) D = 128 float16 26.3 / 33.4, int8 16.2 / 23.7; D = 1024 0.92-1.05x).
 */
static int lane_groups_pay(int lane_groups, int kind, int64_t vectors, int64_t r_c, int64_t dim) {
    const int grouped = kind == ME_KIND_F16 || kind == ME_KIND_BF16 ||
                        (kind == ME_KIND_I8 && dim >= 256);
    return lane_groups && !(r_c > 1 && vectors <= 4 && grouped);
}

/* Whether the AVX-512 copy is the faster vector copy for M query vectors at r_c. */
static int avx512_pays(int half_width, int64_t vectors, int64_t r_c) {
    return !(half_width && r_c > 1 && vectors >= 3 && vectors <= ME_GROUPED_MAX);
}

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
 * has no kernel, -2 when memory runs out, -3 on bad arguments. isa: 0 for the widest this
 * CPU runs, or one ME_ISA_* value (-1 when this CPU cannot run it), plus ME_LANE_GROUPS_ON
 * or _OFF to hold the AVX-512 copy's lane-groups form on or off instead of the CPU's rule
 * (tests and side-by-side timings; the scores agree either way).
 */
ME_EXPORT int metaembed_native_score(const float *queries, int64_t num_queries, int64_t r_q,
                                     int64_t dim, const void *const *tiers,
                                     const float *const *scales, const int64_t *sizes,
                                     int64_t num_tiers, int64_t r_c, int kind, int64_t start,
                                     int64_t stop, float *scores, int64_t stride,
                                     int64_t threads, int isa) {
#ifdef ME_HAVE_AVX2
    const int available = metaembed_native_instruction_sets();
    const CpuRules rules = cpu_rules(available);
    const int forms = isa & (ME_LANE_GROUPS_ON | ME_LANE_GROUPS_OFF);
    isa &= ~(ME_LANE_GROUPS_ON | ME_LANE_GROUPS_OFF);
    if (forms == (ME_LANE_GROUPS_ON | ME_LANE_GROUPS_OFF)) return -3;
    if (isa == 0) /* AMX, VNNI or AVX-512 where each pays, else AVX2 */
        isa = available & ME_ISA_AMX &&
                      amx_pays(kind, whole_tiers(sizes, num_tiers, r_c) != 0, num_queries * r_q,
                               r_c, dim)
                  ? ME_ISA_AMX
              : available & ME_ISA_VNNI && vnni_pays(kind, num_queries * r_q, r_c, dim)
                  ? ME_ISA_VNNI
              : available & ME_ISA_AVX512 && avx512_pays(rules.half_width, num_queries * r_q, r_c)
                  ? ME_ISA_AVX512
                  : ME_ISA_AVX2;
    if (!available ||
        (isa != ME_ISA_AVX2 && isa != ME_ISA_AVX512 && isa != ME_ISA_AMX && isa != ME_ISA_VNNI) ||
        !(available & isa))
        return -1;
    if (isa == ME_ISA_AMX && kind == ME_KIND_F32) isa = ME_ISA_AVX512; /* see _native_amx.c */
    int (*range)(ME_RANGE_ARGS) = isa == ME_ISA_AMX      ? metaembed_score_range_amx
                                  : isa == ME_ISA_VNNI   ? metaembed_score_range_vnni
                                  : isa == ME_ISA_AVX512 ? metaembed_score_range_avx512
                                                         : metaembed_score_range_avx2;
    if (num_tiers < 1 || num_tiers > ME_MAX_TIERS || r_c < 1 || dim < 1 || r_q < 1 ||
        kind < 0 || kind > ME_KIND_I8 || threads < 1)
        return -3;
    if (threads > ME_MAX_THREADS) threads = ME_MAX_THREADS;
    if (threads > stop - start) threads = stop > start ? stop - start : 1; /* no empty range */
    static const int64_t element_bytes[4] = {4, 2, 2, 1};
    Layout layout;
    memset(&layout, 0, sizeof layout);
    layout.element_bytes = element_bytes[kind];
    layout.dim = dim;
    layout.fetch_to_l2 = rules.half_width;
    layout.lane_groups = forms ? forms == ME_LANE_GROUPS_ON
                               : lane_groups_pay(rules.lane_groups, kind, num_queries * r_q, r_c,
                                                 dim);
    int64_t stored = 0;
    for (int64_t t = 0; t < num_tiers; t++) {
        layout.base[t] = (const char *)tiers[t];
        layout.scales[t] = kind == ME_KIND_I8 ? scales[t] : NULL;
        layout.sizes[t] = sizes[t];
        stored += sizes[t];
    }
    if (r_c > stored) return -3;
    layout.places = malloc((size_t)r_c * sizeof(VectorPlace));
    RangeJob *jobs = malloc((size_t)threads * sizeof(RangeJob));
    if (!layout.places || !jobs) {
        free(layout.places);
        free(jobs);
        return -2;
    }
    for (int64_t j = 0, t = 0, index = 0; j < r_c; j++, index++) {
        while (index >= sizes[t]) {
            t++;
            index = 0;
        }
        const VectorPlace place = {layout.base[t] + index * dim * layout.element_bytes,
                                   kind == ME_KIND_I8 ? layout.scales[t] + index : NULL,
                                   sizes[t] * dim * layout.element_bytes, sizes[t]};
        layout.places[j] = place;
    }
    for (int64_t i = 0; i < threads; i++) {
        RangeJob job = {range, queries, num_queries, r_q, r_c,
                        start + (stop - start) * i / threads,
                        start + (stop - start) * (i + 1) / threads,
                        stride, &layout, kind, 0, scores};
        jobs[i] = job;
    }
    run_jobs(run_range, jobs, sizeof jobs[0], threads);
    int status = 0;
    for (int64_t i = 0; i < threads && status == 0; i++) status = jobs[i].status;
    free(layout.places);
    free(jobs);
    return status;
#else
    (void)queries; (void)num_queries; (void)r_q; (void)dim; (void)tiers; (void)scales;
    (void)sizes; (void)num_tiers; (void)r_c; (void)kind; (void)start; (void)stop;
    (void)scores; (void)stride; (void)threads; (void)isa;
    return -1;
#endif
}

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "_native",
    "metaembed's compiled scoring kernel; called through ctypes by metaembed.index.kernels_native.",
    -1, NULL, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&native_module); }
