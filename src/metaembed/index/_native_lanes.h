/*
 * The kernel body for one vector width, included once per instruction set by
 * _native_avx2.c (ME_W = 8 floats) and _native_avx512.c (ME_W = 16), which define first:
 *
 *   ME_W, VEC                  floats per vector register and its type
 *   ME_TARGET, ME_INLINE       the instruction set's function attributes
 *   ME_RANGE_NAME              the name of the entry point this body defines
 *   V_ZERO() V_LOAD(p) V_LOADU(p) V_STORE(p, v) V_STOREU(p, v) V_SET1(x) V_BCAST(p)
 *   V_FMA(a, b, c) V_MAX(a, b) V_MUL(a, b)
 *   load_lanes(vector, d, kind)  ME_W stored values from offset d as float32 (int8 unscaled)
 *   to_8(v)                    a VEC folded to 8 lanes whose sum is the sum of v's lanes
 *   V_ADD(a, b) V_PERMUTE(v, imm) V_SET1_PD(x) V_BCAST4(p)   for the lane groups
 *   ME_PACKED_FEW, ME_QUERY_GROUP_BYTES   whether lane groups are used; queries per pass
 *
 * The forms (described in _native.c) are the same at both widths: a "chunk" is ME_W dims in
 * the dims-along-lanes forms, and a query block is ME_W query vectors in the packed form.
 */

/* P consecutive floats repeated across the register (P = 1, 2 or 4). */
ME_INLINE VEC broadcast_group(const float *values, const int P) {
    if (P == 1) return V_BCAST(values);
    if (P == 2) { /* set1 of a double from memory: one broadcast load, no shuffle uop */
        double pair;
        memcpy(&pair, values, sizeof pair);
        return V_SET1_PD(pair);
    }
    return V_BCAST4(values);
}

/* Each lane group of P lanes (P = 2 or 4) replaced by its sum. */
ME_INLINE VEC fold_groups(VEC v, const int P) {
    v = V_ADD(v, V_PERMUTE(v, 0xB1)); /* swap neighbours */
    if (P == 4) v = V_ADD(v, V_PERMUTE(v, 0x4E)); /* swap pairs */
    return v;
}

/* (sum a, sum b, sum c, sum d) of four accumulators. */
ME_INLINE __m128 sum4_lanes(VEC a, VEC b, VEC c, VEC d) {
    return sum4_8(to_8(a), to_8(b), to_8(c), to_8(d));
}

/* ---------------------------------------------------------------- dims along lanes */

/* dots[m * JB + jj] = <queries[m], vectors[jj]> (raw stored values) for m < MB, jj < JB. */
ME_INLINE void dot_tile(const float *queries, int64_t dim, const void *const *vectors,
                        const char *const *ahead, float *dots, const int MB, const int JB,
                        const int kind, const int to_l2) {
    VEC acc[16]; /* acc[m * JB + jj] */
    for (int i = 0; i < MB * JB; i++) acc[i] = V_ZERO();
    int64_t d = 0;
    for (; d + ME_W <= dim; d += ME_W) {
        fetch_ahead(ahead, d, JB, kind, to_l2);
        VEC values[4];
        for (int jj = 0; jj < JB; jj++) values[jj] = load_lanes(vectors[jj], d, kind);
        for (int m = 0; m < MB; m++) {
            VEC query = V_LOADU(queries + m * dim + d);
            for (int jj = 0; jj < JB; jj++)
                acc[m * JB + jj] = V_FMA(query, values[jj], acc[m * JB + jj]);
        }
    }
    /* MB * JB is a multiple of 4 for every tile shape used below */
    for (int i = 0; i < MB * JB; i += 4)
        _mm_storeu_ps(dots + i, sum4_lanes(acc[i], acc[i + 1], acc[i + 2], acc[i + 3]));
    for (; d < dim; d++) /* dims beyond the last multiple of ME_W */
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
        dot_tile(queries, dim, vectors, NULL, dots, MB, JB, kind, 0);
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

/* r_c > 1 with one or two query vectors: MB x 4 tiles, each fetching the same rows of the
   candidate about 16 KiB further on (ahead_candidates). */
ME_INLINE void score_few_vectors(const float *queries, int64_t num_queries, int64_t r_q,
                                 const Layout *layout, int64_t r_c, int64_t start, int64_t stop,
                                 float *scores, int64_t stride, const int MB, const int kind) {
    const int64_t dim = layout->dim;
    const void *vectors[4];
    const char *ahead[4];
    float dots[8], best[2];
    const int64_t distance = ahead_candidates(r_c * dim * element_bytes_of(kind));
    for (int64_t n = start; n < stop; n++) {
        const int64_t later = ahead_candidate(n, distance, stop);
        for (int m = 0; m < MB; m++) best[m] = -INFINITY;
        for (int64_t j = 0; j < r_c; j += 4) {
            float scale[4];
            for (int jj = 0; jj < 4; jj++) {
                int64_t vector = j + jj < r_c ? j + jj : r_c - 1;
                vectors[jj] = vector_at(layout, n, vector);
                ahead[jj] = vector_at(layout, later, vector);
                scale[jj] = kind == ME_KIND_I8 ? scale_at(layout, n, vector) : 1.0f;
            }
            dot_tile(queries, dim, vectors, ahead, dots, MB, 4, kind, layout->fetch_to_l2);
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
 * block a tile reads stays in L1; while the first group runs, the tile fetches its own tile
 * of a candidate about 16 KiB further on (ahead_candidates).
 */

/* dots[jj] (+)= <queries[m], vectors[jj]> over dims [begin, end), m < 4, lanes = m. */
ME_INLINE void group_dots(const float *queries, int64_t dim, int64_t begin, int64_t end,
                          const void *const *vectors, const char *const *ahead, __m128 *dots,
                          const int JB, const int kind, const int to_l2) {
    VEC acc[12]; /* acc[jj * 4 + m], (8 dims) each */
    for (int i = 0; i < 4 * JB; i++) acc[i] = V_ZERO();
    for (int64_t d = begin; d < end; d += ME_W) {
        fetch_ahead(ahead, d, JB, kind, to_l2);
        VEC values[3];
        for (int jj = 0; jj < JB; jj++) values[jj] = load_lanes(vectors[jj], d, kind);
        for (int m = 0; m < 4; m++) {
            VEC query = V_LOADU(queries + m * dim + d);
            for (int jj = 0; jj < JB; jj++)
                acc[jj * 4 + m] = V_FMA(query, values[jj], acc[jj * 4 + m]);
        }
    }
    for (int jj = 0; jj < JB; jj++) {
        __m128 sums = sum4_lanes(acc[jj * 4], acc[jj * 4 + 1], acc[jj * 4 + 2], acc[jj * 4 + 3]);
        dots[jj] = begin == 0 ? sums : _mm_add_ps(dots[jj], sums);
    }
}

/* dots[g][jj] = <query vectors 4g .. 4g + 3, rows[jj]> (4 lanes), fetching `ahead` rows. */
ME_INLINE void grouped_dots(const float *padded, int64_t dim, const void *const *rows,
                            const char *const *ahead, __m128 dots[2][3], const int G,
                            const int JB, const int kind, const int to_l2) {
    const int64_t full = dim / ME_W * ME_W;
    for (int g = 0; g < G; g++)
        for (int jj = 0; jj < JB; jj++) dots[g][jj] = _mm_setzero_ps();
    for (int64_t begin = 0; begin < full; begin += ME_DIM_BLOCK) {
        int64_t end = begin + ME_DIM_BLOCK < full ? begin + ME_DIM_BLOCK : full;
        for (int g = 0; g < G; g++)
            group_dots(padded + g * 4 * dim, dim, begin, end, rows, g == 0 ? ahead : NULL,
                       dots[g], JB, kind, to_l2);
    }
    if (full < dim) { /* dims beyond the last multiple of ME_W */
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

/* top[g] = max(top[g], dots of group g with candidate vectors rows[0 .. JB)), fetching the
   rows ahead[0 .. JB). */
ME_INLINE void grouped_tile(const float *padded, int64_t dim, const void *const *rows,
                            const char *const *ahead, const float *scales, __m128 *top,
                            const int G, const int JB, const int kind, const int to_l2) {
    __m128 dots[2][3]; /* (group, candidate vector), 4 query lanes */
    grouped_dots(padded, dim, rows, ahead, dots, G, JB, kind, to_l2);
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
        grouped_dots(padded, dim, rows, ahead, dots, 2, JB, kind, layout->fetch_to_l2);
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
 * padded: (4 * G, dim) query vectors, zero past the real ones. rows: room for 2 * r_c pointers
 * (this candidate's vectors, then those of the candidate ahead_candidates() later, which each
 * tile fetches its own tile of while it runs); scales: room for r_c floats.
 */
ME_INLINE void score_grouped(const float *padded, int64_t num_queries, int64_t r_q,
                             const Layout *layout, int64_t r_c, int64_t start, int64_t stop,
                             float *scores, int64_t stride, const void **rows, float *scales,
                             const int G, const int kind) {
    const int64_t dim = layout->dim;
    const int64_t distance = ahead_candidates(r_c * dim * element_bytes_of(kind));
    const char *const *ahead = (const char *const *)rows + r_c;
    const int l2 = layout->fetch_to_l2;
    for (int64_t n = start; n < stop; n++) {
        const int64_t later = ahead_candidate(n, distance, stop);
        for (int64_t j = 0; j < r_c; j++) {
            rows[j] = vector_at(layout, n, j);
            rows[r_c + j] = vector_at(layout, later, j);
            if (kind == ME_KIND_I8) scales[j] = scale_at(layout, n, j);
        }
        __m128 top[2] = {_mm_set1_ps(-INFINITY), _mm_set1_ps(-INFINITY)};
        int64_t j = 0;
        for (; j + 3 <= r_c; j += 3)
            grouped_tile(padded, dim, rows + j, ahead + j, scales + j, top, G, 3, kind, l2);
        if (r_c - j == 2)
            grouped_tile(padded, dim, rows + j, ahead + j, scales + j, top, G, 2, kind, l2);
        if (r_c - j == 1)
            grouped_tile(padded, dim, rows + j, ahead + j, scales + j, top, G, 1, kind, l2);
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

/* Pack full chunk c (dims 8c .. 8c + 7) of the job's rows. */
/* Decode full chunk c (dims c * ME_W ..) of the job's rows into out, (JB, ME_W). */
ME_INLINE void pack_chunk(const PackJob *__restrict job, float *__restrict out, int64_t c,
                          const int JB, const int kind) {
    const int element_bytes = element_bytes_of(kind);
    const int64_t chunks_per_line = 64 / (ME_W * element_bytes);
    if (job->ahead[0] && c % chunks_per_line == 0)
        for (int jj = 0; jj < JB; jj++)
            _mm_prefetch(job->ahead[jj] + c * ME_W * element_bytes, _MM_HINT_T0);
    for (int jj = 0; jj < JB; jj++) {
        VEC values = load_lanes(job->rows[jj], c * ME_W, kind);
        if (kind == ME_KIND_I8) values = V_MUL(values, V_SET1(job->scales[jj]));
        V_STORE(out + jj * ME_W, values);
    }
}

/* Decode the dims after the last full chunk into out, (JB, ME_W), zero beyond `dim`. */
ME_INLINE void decode_tail(const PackJob *job, int64_t dim, float *out, const int JB,
                           const int kind) {
    const int64_t full = dim / ME_W;
    for (int jj = 0; jj < JB; jj++) {
        float *target = out + jj * ME_W;
        for (int k = 0; k < ME_W; k++) {
            int64_t d = full * ME_W + k;
            target[k] = d < dim ? load1(job->rows[jj], d, kind) * job->scales[jj] : 0.0f;
        }
    }
}

/* Pack the dims after the last full chunk into the job's tile, zero beyond `dim`. */
ME_INLINE void pack_tail(const PackJob *job, int64_t dim, const int JB, const int kind) {
    if (dim % ME_W) decode_tail(job, dim, job->target + dim / ME_W * JB * ME_W, JB, kind);
}

/* Pack the job's chunks from `first` on, and its tail. */
ME_INLINE void pack_rest(const PackJob *job, int64_t first, const int JB, const int kind) {
    for (int64_t c = first; c < job->dim / ME_W; c++)
        pack_chunk(job, job->target + c * JB * ME_W, c, JB, kind);
    pack_tail(job, job->dim, JB, kind);
}

/*
 * Micro-kernels: a QB x JB tile of ME_W-lane accumulators, each candidate value broadcast once
 * per dimension, written with named accumulators (an array of them was kept in memory by the
 * compiler). With `sims` NULL, top[b] = max(top[b], max_jj acc[b][jj]); otherwise acc[b][jj]
 * is stored at sims + jj * lanes + b * ME_W (r_c = 1: the JB rows are JB candidates). `job`, when
 * not NULL, is the next tile, packed alongside (its chunks past this tile's after the loop).
 * 1 x 8 and 1 x 4 tiles also score one dim block of a longer dot product (score_ring):
 * ME_RESUME starts the accumulators from `partial`, (JB, ME_W) floats, instead of zero, and
 * ME_SUSPEND stores them there instead of taking the max or storing to `sims`.
 *
 * P > 1 (1 x 8 tiles only): a query block holds ME_W / P query vectors with P consecutive dims
 * each (lane i * P + p: vector i, dim p of the step), so each broadcast carries P candidate
 * values and a step covers P dims; the P lanes of a vector are summed before the max (or the
 * store, at r_c = 1). This fills the lanes when a call has few query vectors (r_q = 8 on 16
 * lanes: P = 2).
 */
#define ME_ZERO V_ZERO()
#define ME_FMA(acc, query, values, jj, k, P) \
    acc = V_FMA(query, broadcast_group((values) + (jj) * ME_W + (k) * (P), P), acc)
#define ME_MAX4(a, b, c, d) V_MAX(V_MAX(a, b), V_MAX(c, d))
#define ME_PACK_ALONGSIDE(JB)                                             \
    if (job && c < job_full) pack_chunk(job, target + c * JB * ME_W, c, JB, kind)
#define ME_PACK_REST(JB) \
    if (job) pack_rest(job, chunks < job_full ? chunks : job_full, JB, kind)
#define ME_RESUME 1
#define ME_SUSPEND 2
#define ME_START(acc, jj) acc = phase & ME_RESUME ? V_LOAD(partial + (jj) * ME_W) : V_ZERO()
#define ME_TILE_ARGS                                                                          \
    const float *transposed, int64_t block_stride, int64_t dim, const float *tile, VEC *top, \
        float *sims, int64_t lanes, const PackJob *__restrict job, float *partial, int phase

ME_INLINE void tile_1x8(ME_TILE_ARGS, const int P, const int kind) {
    const int64_t chunks = (dim + ME_W - 1) / ME_W, job_full = job ? job->dim / ME_W : 0;
    float *__restrict target = job ? job->target : NULL;
    VEC a0, a1, a2, a3, a4, a5, a6, a7;
    ME_START(a0, 0), ME_START(a1, 1), ME_START(a2, 2), ME_START(a3, 3);
    ME_START(a4, 4), ME_START(a5, 5), ME_START(a6, 6), ME_START(a7, 7);
    (void)block_stride;
    for (int64_t c = 0; c < chunks; c++) {
        const float *values = tile + c * 8 * ME_W;
        const float *queries = transposed + c * (ME_W / P) * ME_W;
        ME_PACK_ALONGSIDE(8);
        for (int k = 0; k < ME_W / P; k++) {
            VEC q = V_LOAD(queries + k * ME_W);
            ME_FMA(a0, q, values, 0, k, P); ME_FMA(a1, q, values, 1, k, P);
            ME_FMA(a2, q, values, 2, k, P); ME_FMA(a3, q, values, 3, k, P);
            ME_FMA(a4, q, values, 4, k, P); ME_FMA(a5, q, values, 5, k, P);
            ME_FMA(a6, q, values, 6, k, P); ME_FMA(a7, q, values, 7, k, P);
        }
    }
    ME_PACK_REST(8);
    if (phase & ME_SUSPEND) {
        V_STORE(partial, a0), V_STORE(partial + ME_W, a1), V_STORE(partial + 2 * ME_W, a2);
        V_STORE(partial + 3 * ME_W, a3), V_STORE(partial + 4 * ME_W, a4);
        V_STORE(partial + 5 * ME_W, a5), V_STORE(partial + 6 * ME_W, a6);
        V_STORE(partial + 7 * ME_W, a7);
        return;
    }
    if (P > 1) { /* linear: summing the lane groups of block sums sums the groups */
        a0 = fold_groups(a0, P), a1 = fold_groups(a1, P), a2 = fold_groups(a2, P);
        a3 = fold_groups(a3, P), a4 = fold_groups(a4, P), a5 = fold_groups(a5, P);
        a6 = fold_groups(a6, P), a7 = fold_groups(a7, P);
    }
    if (!sims) {
        VEC low = ME_MAX4(a0, a1, a2, a3), high = ME_MAX4(a4, a5, a6, a7);
        top[0] = V_MAX(top[0], V_MAX(low, high));
        return;
    }
    V_STOREU(sims, a0);
    V_STOREU(sims + lanes, a1);
    V_STOREU(sims + 2 * lanes, a2);
    V_STOREU(sims + 3 * lanes, a3);
    V_STOREU(sims + 4 * lanes, a4);
    V_STOREU(sims + 5 * lanes, a5);
    V_STOREU(sims + 6 * lanes, a6);
    V_STOREU(sims + 7 * lanes, a7);
}

ME_INLINE void tile_1x4(ME_TILE_ARGS, const int kind) {
    const int64_t chunks = (dim + ME_W - 1) / ME_W, job_full = job ? job->dim / ME_W : 0;
    float *__restrict target = job ? job->target : NULL;
    VEC a0, a1, a2, a3; /* even dims of a step pair */
    ME_START(a0, 0), ME_START(a1, 1), ME_START(a2, 2), ME_START(a3, 3);
    VEC b0 = ME_ZERO, b1 = ME_ZERO, b2 = ME_ZERO, b3 = ME_ZERO; /* odd: 8 chains in flight */
    (void)block_stride;
    for (int64_t c = 0; c < chunks; c++) {
        const float *values = tile + c * 4 * ME_W;
        const float *queries = transposed + c * ME_W * ME_W;
        ME_PACK_ALONGSIDE(4);
        for (int k = 0; k < ME_W; k += 2) {
            VEC q = V_LOAD(queries + k * ME_W);
            VEC r = V_LOAD(queries + (k + 1) * ME_W);
            ME_FMA(a0, q, values, 0, k, 1); ME_FMA(a1, q, values, 1, k, 1);
            ME_FMA(a2, q, values, 2, k, 1); ME_FMA(a3, q, values, 3, k, 1);
            ME_FMA(b0, r, values, 0, k + 1, 1); ME_FMA(b1, r, values, 1, k + 1, 1);
            ME_FMA(b2, r, values, 2, k + 1, 1); ME_FMA(b3, r, values, 3, k + 1, 1);
        }
    }
    ME_PACK_REST(4);
    a0 = V_ADD(a0, b0), a1 = V_ADD(a1, b1), a2 = V_ADD(a2, b2), a3 = V_ADD(a3, b3);
    if (phase & ME_SUSPEND) {
        V_STORE(partial, a0), V_STORE(partial + ME_W, a1);
        V_STORE(partial + 2 * ME_W, a2), V_STORE(partial + 3 * ME_W, a3);
        return;
    }
    if (!sims) {
        top[0] = V_MAX(top[0], ME_MAX4(a0, a1, a2, a3));
        return;
    }
    V_STOREU(sims, a0);
    V_STOREU(sims + lanes, a1);
    V_STOREU(sims + 2 * lanes, a2);
    V_STOREU(sims + 3 * lanes, a3);
}

ME_INLINE void tile_2x4(ME_TILE_ARGS, const int kind) { /* whole dot products only */
    const int64_t chunks = (dim + ME_W - 1) / ME_W, job_full = job ? job->dim / ME_W : 0;
    float *__restrict target = job ? job->target : NULL;
    VEC a0 = ME_ZERO, a1 = ME_ZERO, a2 = ME_ZERO, a3 = ME_ZERO; /* query block 0 */
    VEC b0 = ME_ZERO, b1 = ME_ZERO, b2 = ME_ZERO, b3 = ME_ZERO; /* query block 1 */
    for (int64_t c = 0; c < chunks; c++) {
        const float *values = tile + c * 4 * ME_W;
        const float *queries = transposed + c * ME_W * ME_W;
        ME_PACK_ALONGSIDE(4);
        for (int k = 0; k < ME_W; k++) {
            VEC q = V_LOAD(queries + k * ME_W);
            VEC r = V_LOAD(queries + block_stride + k * ME_W);
            VEC v0 = V_BCAST(values + k);
            VEC v1 = V_BCAST(values + ME_W + k);
            VEC v2 = V_BCAST(values + 2 * ME_W + k);
            VEC v3 = V_BCAST(values + 3 * ME_W + k);
            a0 = V_FMA(q, v0, a0);
            b0 = V_FMA(r, v0, b0);
            a1 = V_FMA(q, v1, a1);
            b1 = V_FMA(r, v1, b1);
            a2 = V_FMA(q, v2, a2);
            b2 = V_FMA(r, v2, b2);
            a3 = V_FMA(q, v3, a3);
            b3 = V_FMA(r, v3, b3);
        }
    }
    ME_PACK_REST(4);
    (void)partial, (void)phase;
    if (!sims) {
        top[0] = V_MAX(top[0], ME_MAX4(a0, a1, a2, a3));
        top[1] = V_MAX(top[1], ME_MAX4(b0, b1, b2, b3));
        return;
    }
    V_STOREU(sims, a0);
    V_STOREU(sims + ME_W, b0);
    V_STOREU(sims + lanes, a1);
    V_STOREU(sims + lanes + ME_W, b1);
    V_STOREU(sims + 2 * lanes, a2);
    V_STOREU(sims + 2 * lanes + ME_W, b2);
    V_STOREU(sims + 3 * lanes, a3);
    V_STOREU(sims + 3 * lanes + ME_W, b3);
}

/* One compiled copy per (shape, storage kind): the hot loop gets every register to itself. */
#define ME_TILE_COPY(SHAPE, K)                                                             \
    __attribute__((noinline)) ME_TARGET static void SHAPE##_k##K(ME_TILE_ARGS) {           \
        SHAPE(transposed, block_stride, dim, tile, top, sims, lanes, job, partial, phase, K);  \
    }
#define ME_TILE_COPIES(SHAPE) \
    ME_TILE_COPY(SHAPE, 0) ME_TILE_COPY(SHAPE, 1) ME_TILE_COPY(SHAPE, 2) ME_TILE_COPY(SHAPE, 3)
ME_TILE_COPIES(tile_1x4)
ME_TILE_COPIES(tile_2x4)
#define ME_TILE_1X8_COPY(P, K)                                                             \
    __attribute__((noinline)) ME_TARGET static void tile_1x8_p##P##_k##K(ME_TILE_ARGS) {   \
        tile_1x8(transposed, block_stride, dim, tile, top, sims, lanes, job, partial, phase, P, \
                 K);                                                                       \
    }
#define ME_TILE_1X8_COPIES(P) \
    ME_TILE_1X8_COPY(P, 0) ME_TILE_1X8_COPY(P, 1) ME_TILE_1X8_COPY(P, 2) ME_TILE_1X8_COPY(P, 3)
ME_TILE_1X8_COPIES(1)
#if ME_PACKED_FEW /* lane groups: only the widths that use them compile these copies */
ME_TILE_1X8_COPIES(2)
ME_TILE_1X8_COPIES(4)
#endif

#define ME_PICK(SHAPE)                                                       \
    (kind == 0 ? SHAPE##_k0 : kind == 1 ? SHAPE##_k1 : kind == 2 ? SHAPE##_k2 : SHAPE##_k3)

/* Where query vector m's value sits in a row of staged lanes (P dims per lane group). */
#define ME_LANE_OF(m, P) ((m) / (ME_W / (P)) * ME_W + (m) % (ME_W / (P)) * (P))

/* What every pass of score_group shares: the queries, where scores go, the staged lanes. */
typedef struct {
    int64_t first_query, group_queries, r_q, stride, lanes;
    float *scores, *staged;
    int64_t staged_first; /* first candidate held in `staged` */
} Staging;

/* Sum the staged lanes of candidates [staged_first, done) over r_q into the score rows, once
   ME_STAGE candidates are staged or when `last`. */
ME_INLINE void flush_staged(Staging *st, int64_t done, int64_t stop, int last, const int P) {
    if (done - st->staged_first < ME_STAGE && !last) return;
    const int64_t count = (done < stop ? done : stop) - st->staged_first;
    const int64_t lanes = st->lanes, r_q = st->r_q;
    int64_t q = 0;
    if (r_q == 1 && P == 1) /* lanes are queries: 8 x 8 transposes, whole-row stores */
        for (; q + 8 <= st->group_queries; q += 8)
            write_transposed(st->staged, lanes, q, count,
                             st->scores + (st->first_query + q) * st->stride + st->staged_first,
                             st->stride);
    for (; q < st->group_queries; q++) {
        float *row = st->scores + (st->first_query + q) * st->stride + st->staged_first;
        for (int64_t c = 0; c < count; c++) {
            float total = 0.0f;
            for (int64_t i = 0; i < r_q; i++)
                total += st->staged[c * lanes + ME_LANE_OF(q * r_q + i, P)];
            row[c] = total;
        }
    }
    st->staged_first += count;
}

/* The first candidate of unit `unit` (r_c = 1: units of JB candidates, else one each). */
ME_INLINE int64_t unit_first(int64_t r_c, int64_t start, int64_t unit, const int JB) {
    return r_c == 1 ? start + unit * JB : start + unit;
}

/* Dims of dim block `block`, of `block_chunks` chunks each (the last one may be shorter). */
ME_INLINE int64_t block_dims(int64_t dim, int64_t block, int64_t block_chunks) {
    const int64_t offset = block * block_chunks * ME_W;
    return dim - offset < block_chunks * ME_W ? dim - offset : block_chunks * ME_W;
}

/* The fixed shape of a score_ring pass. */
typedef struct {
    const Layout *layout;
    int64_t r_c, start, stop, units, tiles; /* tiles per unit */
    int64_t block_chunks, blocks;           /* dim blocks of block_chunks chunks */
    int64_t group_units, groups;            /* units scored together, a dim block at a time */
} Ring;

/* A step of score_ring: tile `t` of unit `member` of group `group`, over dim block `block`
   (counters, so that a step costs no division). */
typedef struct {
    int64_t group, block, member, t;
} RingStep;

ME_INLINE int64_t ring_unit(const Ring *ring, const RingStep *step) {
    return step->group * ring->group_units + step->member;
}

/* The step after `step`: tiles of a unit, units of the group, dim blocks, then groups. */
ME_INLINE void ring_advance(const Ring *ring, RingStep *step) {
    if (++step->t < ring->tiles) return;
    step->t = 0;
    const int64_t left = ring->units - step->group * ring->group_units;
    if (++step->member < (left < ring->group_units ? left : ring->group_units)) return;
    step->member = 0;
    if (++step->block < ring->blocks) return;
    step->block = 0;
    step->group++;
}

/* Plan the packing of `step`'s tile (its dim block only) into `target`, fetching meanwhile
   the same tile of the next unit (one dim block: whole rows, as the kernel did before dim
   blocks) or the rows of the step after it (several dim blocks). */
ME_INLINE void ring_plan(const Ring *ring, const RingStep *step, float *target, PackJob *job,
                         const int JB, const int kind) {
    const int64_t unit = ring_unit(ring, step);
    RingStep after = *step;
    if (ring->blocks > 1) ring_advance(ring, &after);
    const int64_t ahead_unit = ring->blocks == 1 ? (unit + 1 < ring->units ? unit + 1 : -1)
                               : after.group < ring->groups ? ring_unit(ring, &after)
                                                            : -1;
    plan_tile(ring->layout, ring->r_c, ring->start, ring->stop, unit, step->t, ahead_unit,
              after.t, target, job, JB, kind);
    job->dim = block_dims(ring->layout->dim, step->block, ring->block_chunks);
    if (ring->blocks == 1) return;
    const int64_t block_bytes = ring->block_chunks * ME_W * element_bytes_of(kind);
    for (int jj = 0; jj < JB; jj++) {
        job->rows[jj] = (const char *)job->rows[jj] + step->block * block_bytes;
        if (job->ahead[jj]) job->ahead[jj] += after.block * block_bytes;
    }
}

/*
 * One block of query vectors (at most ME_W / P): every tile is read once, so the tile after it
 * is packed alongside into the other of two buffers and only two tiles are live (one query
 * (16, 64) at D = 128: 9-12% faster than packing whole units, whose two buffers outgrow L1).
 * Dot products longer than ME_RING_BLOCK dims are scored a dim block at a time, partial sums
 * kept in `partial` ((tiles of a group, JB, ME_W)), over groups of units that hold 8 tiles or
 * more, so a block of the transposed queries and the two tile buffers stay in L1 while the
 * group's tiles read it (2-core Xeon VM without AMX, float16, side by side with whole rows:
 * one query (16, 64) at D = 512 1.19-1.26x, D = 1024 1.03-1.10x; (1, 1) x 16 queries at
 * D = 1024 1.01-1.32x; 8 queries (2, 4) at D = 1024 1.17x).
 */
ME_INLINE void score_ring(const float *transposed, const Layout *layout, int64_t r_c,
                          int64_t start, int64_t stop, Staging *st, float *packed,
                          float *partial, const int JB, const int P, const int kind) {
    const int64_t chunks = (layout->dim + ME_W - 1) / ME_W;
    Ring ring = {layout, r_c, start, stop};
    ring.units = r_c == 1 ? (stop - start + JB - 1) / JB : stop - start;
    ring.tiles = r_c == 1 ? 1 : (r_c + JB - 1) / JB;
    ring.block_chunks = chunks * ME_W > ME_RING_BLOCK ? ME_RING_BLOCK / ME_W : chunks;
    ring.blocks = (chunks + ring.block_chunks - 1) / ring.block_chunks;
    ring.group_units = ring.blocks > 1 && ring.tiles < 8 ? 8 / ring.tiles : 1;
    ring.groups = (ring.units + ring.group_units - 1) / ring.group_units;
    const int64_t slot_floats = ring.block_chunks * JB * ME_W;
    const int64_t block_queries = ring.block_chunks * (ME_W / P) * ME_W; /* a query block */
    PackJob job;
    RingStep step = {0, 0, 0, 0};
    ring_plan(&ring, &step, packed, &job, JB, kind);
    pack_rest(&job, 0, JB, kind);
    VEC top[8]; /* per unit of the group (r_c > 1) */
    for (int64_t sequence = 0; step.group < ring.groups; sequence++) {
        RingStep next = step;
        ring_advance(&ring, &next);
        const PackJob *alongside = NULL;
        if (next.group < ring.groups) {
            ring_plan(&ring, &next, packed + ((sequence + 1) & 1) * slot_floats, &job, JB, kind);
            alongside = &job;
        }
        const float *tile = packed + (sequence & 1) * slot_floats;
        const int64_t unit = ring_unit(&ring, &step), member = step.member;
        const int last_block = step.block + 1 == ring.blocks;
        const int phase = (step.block ? ME_RESUME : 0) | (last_block ? 0 : ME_SUSPEND);
        float *lane_values =
            st->staged + (unit_first(r_c, start, unit, JB) - st->staged_first) * st->lanes;
        float *out = r_c == 1 ? lane_values : NULL;
        float *acc = partial + (member * ring.tiles + step.t) * JB * ME_W;
        if (step.t == 0 && step.block == 0) top[member] = V_SET1(-INFINITY);
        const float *query = transposed + step.block * block_queries;
        const int64_t dim = block_dims(layout->dim, step.block, ring.block_chunks);
#define ME_RING_TILE(SHAPE) \
    ME_PICK(SHAPE)(query, 0, dim, tile, &top[member], out, st->lanes, alongside, acc, phase)
#if ME_PACKED_FEW
        if (JB == 8 && P == 4)
            ME_RING_TILE(tile_1x8_p4);
        else if (JB == 8 && P == 2)
            ME_RING_TILE(tile_1x8_p2);
        else
#endif
            if (JB == 8)
            ME_RING_TILE(tile_1x8_p1);
        else
            ME_RING_TILE(tile_1x4);
#undef ME_RING_TILE
        if (r_c > 1 && last_block && step.t == ring.tiles - 1)
            V_STOREU(lane_values, top[member]);
        if (next.group != step.group) /* the group's units are scored */
            flush_staged(st, unit_first(r_c, start, unit + 1, JB), stop,
                         next.group == ring.groups, P);
        step = next;
    }
}

/*
 * Scores of queries [first_query, first_query + group_queries) for candidates [start, stop).
 * JB = 8 with a single ME_W-lane block of query vectors (1 x 8 tiles), else 4 (2 x 4 tiles for
 * pairs of blocks, 1 x 4 for an odd last block). packed: two units' worth of packed tiles.
 * P: dims per lane group (1, or 2 and 4 with a single block).
 */
ME_INLINE void score_group(const float *queries, int64_t first_query, int64_t group_queries,
                           int64_t r_q, const Layout *layout, int64_t r_c, int64_t start,
                           int64_t stop, float *scores, int64_t stride, float *transposed,
                           float *packed, float *staged, float *partial, const int JB,
                           const int P, const int kind) {
    const int64_t dim = layout->dim;
    const int64_t chunks = (dim + ME_W - 1) / ME_W;
    const int64_t per_block = ME_W / P; /* query vectors per block, and steps per chunk */
    const int64_t block_stride = chunks * per_block * ME_W;
    const int64_t vectors = group_queries * r_q;
    const int64_t blocks = (vectors + per_block - 1) / per_block;
    const int64_t lanes = blocks * ME_W;
    const int64_t tile_floats = chunks * JB * ME_W;
    const int64_t units = r_c == 1 ? (stop - start + JB - 1) / JB : stop - start;
    const int64_t tiles = r_c == 1 ? 1 : (r_c + JB - 1) / JB;
    const float *group = queries + first_query * r_q * dim;
    /* (blocks, chunks * per_block steps, ME_W lanes), zero-padded; lane i * P + p of step s
       holds vector b * per_block + i at dim s * P + p */
    for (int64_t b = 0; b < blocks; b++)
        for (int64_t s = 0; s < chunks * per_block; s++)
            for (int64_t lane = 0; lane < ME_W; lane++) {
                int64_t m = b * per_block + lane / P, d = s * P + lane % P;
                transposed[b * block_stride + s * ME_W + lane] =
                    m < vectors && d < dim ? group[m * dim + d] : 0.0f;
            }
    /* per-lane values (max over candidate vectors, or the dot with the first vector) go to a
       staging block (candidates, lanes) and are summed over r_q and written out row by row
       every ME_STAGE candidates: reading lanes back right after the vector stores that wrote
       them stalled on store forwarding and cost as much as the FMAs at (1, 1) */
    Staging st = {first_query, group_queries, r_q, stride, lanes, scores, staged, start};
    if (blocks == 1) {
        score_ring(transposed, layout, r_c, start, stop, &st, packed, partial, JB, P, kind);
        return;
    }
    /* several blocks read a unit's tiles once per block: the next unit is packed alongside */
    float *current = packed, *next = packed + tiles * tile_floats;
    PackJob job;
    for (int64_t t = 0; t < tiles; t++) {
        plan_tile(layout, r_c, start, stop, 0, t, units > 1 ? 1 : -1, t,
                  current + t * tile_floats, &job, JB, kind);
        pack_rest(&job, 0, JB, kind);
    }
    for (int64_t unit = 0; unit < units; unit++) {
        float *lane_values =
            staged + (unit_first(r_c, start, unit, JB) - st.staged_first) * lanes;
        for (int64_t b = 0; b < blocks;) {
            const int pair = JB == 4 && blocks - b >= 2;
            VEC top[2] = {V_SET1(-INFINITY), V_SET1(-INFINITY)};
            for (int64_t t = 0; t < tiles; t++) {
                const PackJob *alongside = NULL;
                const float *tile = current + t * tile_floats;
                if (b == 0 && unit + 1 < units) {
                    plan_tile(layout, r_c, start, stop, unit + 1, t,
                              unit + 2 < units ? unit + 2 : -1, t, next + t * tile_floats, &job,
                              JB, kind);
                    alongside = &job;
                }
                float *out = r_c == 1 ? lane_values + b * ME_W : NULL;
                const float *query = transposed + b * block_stride;
                if (pair)
                    ME_PICK(tile_2x4)(query, block_stride, dim, tile, top, out, lanes, alongside,
                                      NULL, 0);
                else
                    ME_PICK(tile_1x4)(query, block_stride, dim, tile, top, out, lanes, alongside,
                                      NULL, 0);
            }
            if (r_c > 1) {
                V_STOREU(lane_values + b * ME_W, top[0]);
                if (pair) V_STOREU(lane_values + (b + 1) * ME_W, top[1]);
            }
            b += pair ? 2 : 1;
        }
        flush_staged(&st, unit_first(r_c, start, unit + 1, JB), stop, unit + 1 == units, P);
        float *swap = current;
        current = next;
        next = swap;
    }
}

ME_TARGET int ME_RANGE_NAME(ME_RANGE_ARGS) {
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
    /* one block of lane groups (P dims each) for a few query vectors, where the width has
       lanes to spare (AVX-512: 3 to 8 vectors, or 5 to 8 at r_c = 1) and the CPU's rules
       take them (Layout.lane_groups); else the grouped dims-along-lanes form */
    const int P = ME_PACKED_FEW && layout->lane_groups && vectors <= ME_W / 2 &&
                          vectors > (r_c > 1 ? 2 : 4)
                      ? (vectors <= ME_W / 4 ? 4 : 2)
                      : 1;
    if (P == 1 && vectors <= ME_GROUPED_MAX) { /* r_c > 1, or r_c = 1 with 5-8 vectors */
        const int G = vectors <= 4 ? 1 : 2;
        /* 64-byte aligned (so are its rows when dim is a multiple of 16): one query (8, 16)
           D = 1024 ran 1.1-1.16x faster on Zen 4 than from calloc's 16-byte alignment, where
           full-width loads of the query rows split cache lines */
        const size_t padded_bytes = ((size_t)(4 * G * dim) * sizeof(float) + 63) / 64 * 64;
        float *padded = aligned_alloc(64, padded_bytes);
        if (padded) memset(padded, 0, padded_bytes);
        const void **rows = malloc((size_t)(2 * r_c) * sizeof(void *));
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
    int64_t max_lanes = (per_group * r_q + ME_W / P - 1) / (ME_W / P) * ME_W;
    const int64_t chunks = (dim + ME_W - 1) / ME_W;
    /* one block takes 1 x 8 tiles, but 1 x 4 where 4-row tiles repeat fewer vectors (r_c % 8 in
       1..4: r_c = 4 fills one 4-row tile, half of an 8-row one). Zen 5, kernel_ab, 8 queries
       (2, 4) (16 vectors, one 16-lane block): D = 1024 20k 8.9 vs 16.8 ms, D = 128 100k 6.2
       vs 11.1; (2, 12) D = 1024 25.3 vs 34.2; (2, 16) level */
    const int64_t rows_left = r_c % 8;
    const int JB = max_lanes == ME_W && (r_c == 1 || P > 1 || rows_left == 0 || rows_left > 4)
                       ? 8
                       : 4;
    int64_t packed_rows = 2 * (r_c == 1 ? JB : (r_c + JB - 1) / JB * JB); /* two units */
    float *transposed = aligned_alloc(64, (size_t)(max_lanes * chunks * ME_W * 4));
    float *buffer = aligned_alloc(64, (size_t)(packed_rows * chunks * ME_W * 4));
    /* staged: ME_STAGE candidates and a group of up to 8 tiles of 8 (score_ring) */
    float *staged = aligned_alloc(64, (size_t)((ME_STAGE + 64) * max_lanes * 4));
    const int64_t tiles = r_c == 1 ? 1 : (r_c + JB - 1) / JB; /* partial: a group's tiles */
    float *partial = aligned_alloc(64, (size_t)((tiles > 8 ? tiles : 8) * JB * ME_W * 4));
    if (!transposed || !buffer || !staged || !partial) {
        free(transposed);
        free(buffer);
        free(staged);
        free(partial);
        return -2;
    }
    for (int64_t first = 0; first < num_queries; first += per_group) {
        int64_t count = num_queries - first < per_group ? num_queries - first : per_group;
#define ME_GROUP(K)                                                                           \
    if (JB == 8)                                                                              \
        score_group(queries, first, count, r_q, layout, r_c, start, stop, scores, stride,     \
                    transposed, buffer, staged, partial, 8, P, K);                              \
    else                                                                                      \
        score_group(queries, first, count, r_q, layout, r_c, start, stop, scores, stride,     \
                    transposed, buffer, staged, partial, 4, 1, K);
        ME_DISPATCH_KIND(ME_GROUP)
    }
    free(transposed);
    free(buffer);
    free(staged);
    free(partial);
    return 0;
}
