/*
 * Top-k of each row of a score matrix, on the kernel's own threads.
 *
 * Why not torch.topk: it runs its rows on torch's OpenMP threads, which spin for a while after
 * the region ends and take the cores from the next search's scoring threads. On the 2-core Zen 5
 * VM, 8 queries at (1, 1) over 100k float16 candidates: topk then score 2.91 ms against 0.29 +
 * 1.40 apart, and a whole search 3.6 ms against 2.2 with OMP_WAIT_POLICY=PASSIVE (docs/index.md).
 *
 * Per row: the best k so far, sorted (higher score first; equal scores keep the lower
 * position first), and a threshold, the k-th score; 8 scores at a time are compared with it
 * (AVX2), and only a block holding a larger one is walked. Scores equal to the threshold never
 * enter, so -inf (a deleted row's mark) never does: a row with fewer than k larger scores
 * leaves position -1 and score -inf in the slots it did not fill.
 */
#include "_native_common.h"

#ifdef ME_HAVE_AVX2
typedef struct {
    const float *scores;
    int64_t first_row, last_row, n, stride, k;
    float *top_scores;
    int64_t *top_positions;
} TopKJob;

/* Insert (value, position) into the sorted best k of one row; returns the new threshold. */
static float insert_sorted(float *best, int64_t *positions, int64_t k, float value,
                           int64_t position) {
    int64_t slot = k - 1;
    while (slot > 0 && best[slot - 1] < value) {
        best[slot] = best[slot - 1];
        positions[slot] = positions[slot - 1];
        slot--;
    }
    best[slot] = value;
    positions[slot] = position;
    return best[k - 1];
}

ME_AVX2_TARGET static void top_k_rows(const TopKJob *job) {
    for (int64_t row = job->first_row; row < job->last_row; row++) {
        const float *values = job->scores + row * job->stride;
        float *best = job->top_scores + row * job->k;
        int64_t *positions = job->top_positions + row * job->k;
        for (int64_t slot = 0; slot < job->k; slot++) {
            best[slot] = -INFINITY;
            positions[slot] = -1;
        }
        float threshold = -INFINITY;
        int64_t j = 0;
        for (; j + 8 <= job->n; j += 8) {
            const __m256 block = _mm256_loadu_ps(values + j); /* (8,) */
            int above = _mm256_movemask_ps(_mm256_cmp_ps(block, _mm256_set1_ps(threshold),
                                                         _CMP_GT_OQ));
            while (above) { /* lowest position first, so ties keep the earlier one */
                const int lane = __builtin_ctz((unsigned)above);
                above &= above - 1;
                if (values[j + lane] > threshold)
                    threshold = insert_sorted(best, positions, job->k, values[j + lane], j + lane);
            }
        }
        for (; j < job->n; j++)
            if (values[j] > threshold)
                threshold = insert_sorted(best, positions, job->k, values[j], j);
    }
}

static void *run_top_k(void *argument) {
    top_k_rows(argument);
    return NULL;
}
#endif

/*
 * For each of num_queries rows of scores ((num_queries, stride) float32, the first n columns
 * read), the k largest, best first: top_scores (num_queries, k) float32 and top_positions
 * (num_queries, k) int64 column indices, -inf and -1 where fewer than k scores exceed -inf.
 * Rows are split over up to `threads` threads (started and joined here). Returns 0, -1 when
 * this build has no kernel, -3 on bad arguments.
 */
ME_EXPORT int metaembed_native_top_k(const float *scores, int64_t num_queries, int64_t n,
                                     int64_t stride, int64_t k, float *top_scores,
                                     int64_t *top_positions, int64_t threads) {
#ifdef ME_HAVE_AVX2
    if (num_queries < 0 || n < 0 || stride < n || k < 1 || threads < 1) return -3;
    if (threads > num_queries) threads = num_queries > 0 ? num_queries : 1;
    if (threads > 64) threads = 64;
    TopKJob jobs[64];
    for (int64_t i = 0; i < threads; i++) {
        const TopKJob job = {scores, num_queries * i / threads, num_queries * (i + 1) / threads,
                             n, stride, k, top_scores, top_positions};
        jobs[i] = job;
    }
    run_jobs(run_top_k, jobs, sizeof jobs[0], threads);
    return 0;
#else
    (void)scores; (void)num_queries; (void)n; (void)stride; (void)k; (void)top_scores;
    (void)top_positions; (void)threads;
    return -1;
#endif
}
