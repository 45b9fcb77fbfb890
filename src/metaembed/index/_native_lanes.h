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

ME_INLINE void pack_tile(const PackJob *job, int64_t dim, const int JB, const int kind) {
    for (int64_t c = 0; c < dim / ME_W; c++)
        pack_chunk(job, job->target + c * JB * ME_W, c, JB, kind);
    pack_tail(job, dim, JB, kind);
}

/*
 * Micro-kernels: a QB x JB tile of ME_W-lane accumulators, each candidate value broadcast once
 * per dimension, written with named accumulators (an array of them was kept in memory by the
 * compiler). With `sims` NULL, top[b] = max(top[b], max_jj acc[b][jj]); otherwise acc[b][jj]
 * is stored at sims + jj * lanes + b * ME_W (r_c = 1: the JB rows are JB candidates). `job`, when
 * not NULL, is the next unit's tile, packed alongside.
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
    if (job && c < full) pack_chunk(job, target + c * JB * ME_W, c, JB, kind)
#define ME_TILE_ARGS                                                                          \
    const float *transposed, int64_t block_stride, int64_t dim, const float *tile, VEC *top, \
        float *sims, int64_t lanes, const PackJob *__restrict job

ME_INLINE void tile_1x8(ME_TILE_ARGS, const int P, const int kind) {
    const int64_t chunks = (dim + ME_W - 1) / ME_W, full = dim / ME_W;
    float *__restrict target = job ? job->target : NULL;
    VEC a0 = ME_ZERO, a1 = ME_ZERO, a2 = ME_ZERO, a3 = ME_ZERO;
    VEC a4 = ME_ZERO, a5 = ME_ZERO, a6 = ME_ZERO, a7 = ME_ZERO;
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
    if (job) pack_tail(job, dim, 8, kind);
    if (P > 1) {
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
    const int64_t chunks = (dim + ME_W - 1) / ME_W, full = dim / ME_W;
    float *__restrict target = job ? job->target : NULL;
    VEC a0 = ME_ZERO, a1 = ME_ZERO, a2 = ME_ZERO, a3 = ME_ZERO; /* even dims of a step pair */
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
    if (job) pack_tail(job, dim, 4, kind);
    a0 = V_ADD(a0, b0), a1 = V_ADD(a1, b1), a2 = V_ADD(a2, b2), a3 = V_ADD(a3, b3);
    if (!sims) {
        top[0] = V_MAX(top[0], ME_MAX4(a0, a1, a2, a3));
        return;
    }
    V_STOREU(sims, a0);
    V_STOREU(sims + lanes, a1);
    V_STOREU(sims + 2 * lanes, a2);
    V_STOREU(sims + 3 * lanes, a3);
}

ME_INLINE void tile_2x4(ME_TILE_ARGS, const int kind) {
    const int64_t chunks = (dim + ME_W - 1) / ME_W, full = dim / ME_W;
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
    if (job) pack_tail(job, dim, 4, kind);
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
        SHAPE(transposed, block_stride, dim, tile, top, sims, lanes, job, K);              \
    }
#define ME_TILE_COPIES(SHAPE) \
    ME_TILE_COPY(SHAPE, 0) ME_TILE_COPY(SHAPE, 1) ME_TILE_COPY(SHAPE, 2) ME_TILE_COPY(SHAPE, 3)
ME_TILE_COPIES(tile_1x4)
ME_TILE_COPIES(tile_2x4)
#define ME_TILE_1X8_COPY(P, K)                                                             \
    __attribute__((noinline)) ME_TARGET static void tile_1x8_p##P##_k##K(ME_TILE_ARGS) {   \
        tile_1x8(transposed, block_stride, dim, tile, top, sims, lanes, job, P, K);        \
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

/*
 * Scores of queries [first_query, first_query + group_queries) for candidates [start, stop).
 * JB = 8 with a single ME_W-lane block of query vectors (1 x 8 tiles), else 4 (2 x 4 tiles for
 * pairs of blocks, 1 x 4 for an odd last block). packed: two units' worth of packed tiles.
 * P: dims per lane group (1, or 2 and 4 with a single block).
 */
ME_INLINE void score_group(const float *queries, int64_t first_query, int64_t group_queries,
                           int64_t r_q, const Layout *layout, int64_t r_c, int64_t start,
                           int64_t stop, float *scores, int64_t stride, float *transposed,
                           float *packed, float *staged, const int JB, const int P,
                           const int kind) {
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
    /* one block of query vectors reads each tile once: the tile after it (maybe the next
       unit's first) is packed alongside, into the other of two tile buffers, so only two tiles
       are live (one query (16, 64) at D = 128: 9-12% faster than packing whole units, whose
       two buffers outgrow L1); several blocks read a unit's tiles once per block: the next
       unit is packed alongside */
    const int tile_ring = blocks == 1;
    int64_t sequence = 0; /* tiles scored so far (tile_ring) */
    float *current = packed, *next = packed + tiles * tile_floats;
    int64_t staged_first = start; /* first candidate held in `staged` */
    PackJob job;
    for (int64_t t = 0; t < (tile_ring ? 1 : tiles); t++) {
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
            VEC top[2] = {V_SET1(-INFINITY), V_SET1(-INFINITY)};
            for (int64_t t = 0; t < tiles; t++) {
                const PackJob *alongside = NULL;
                const float *tile = current + t * tile_floats;
                if (tile_ring) {
                    const int64_t after = t + 1 < tiles ? unit : unit + 1;
                    tile = packed + (sequence & 1) * tile_floats;
                    if (after < units) {
                        plan_tile(layout, r_c, start, stop, units, after, t + 1 < tiles ? t + 1 : 0,
                                  packed + ((sequence + 1) & 1) * tile_floats, &job, JB, kind);
                        alongside = &job;
                    }
                    sequence++;
                } else if (b == 0 && unit + 1 < units) {
                    plan_tile(layout, r_c, start, stop, units, unit + 1, t,
                              next + t * tile_floats, &job, JB, kind);
                    alongside = &job;
                }
                float *out = r_c == 1 ? lane_values + b * ME_W : NULL;
                const float *query = transposed + b * block_stride;
                if (pair)
                    ME_PICK(tile_2x4)(query, block_stride, dim, tile, top, out, lanes, alongside);
#if ME_PACKED_FEW
                else if (JB == 8 && P == 4)
                    ME_PICK(tile_1x8_p4)(query, block_stride, dim, tile, top, out, lanes,
                                         alongside);
                else if (JB == 8 && P == 2)
                    ME_PICK(tile_1x8_p2)(query, block_stride, dim, tile, top, out, lanes,
                                         alongside);
#endif
                else if (JB == 8)
                    ME_PICK(tile_1x8_p1)(query, block_stride, dim, tile, top, out, lanes,
                                         alongside);
                else
                    ME_PICK(tile_1x4)(query, block_stride, dim, tile, top, out, lanes, alongside);
            }
            if (r_c > 1) {
                V_STOREU(lane_values + b * ME_W, top[0]);
                if (pair) V_STOREU(lane_values + (b + 1) * ME_W, top[1]);
            }
            b += pair ? 2 : 1;
        }
        const int64_t done = r_c == 1 ? start + (unit + 1) * JB : start + unit + 1;
        if (done - staged_first >= ME_STAGE || unit + 1 == units) {
            const int64_t count = (done < stop ? done : stop) - staged_first;
            int64_t q = 0;
            if (r_q == 1 && P == 1) /* lanes are queries: 8 x 8 transposes, whole-row stores */
                for (; q + 8 <= group_queries; q += 8)
                    write_transposed(staged, lanes, q, count,
                                     scores + (first_query + q) * stride + staged_first, stride);
            for (; q < group_queries; q++) {
                float *row = scores + (first_query + q) * stride + staged_first;
                for (int64_t c = 0; c < count; c++) {
                    float total = 0.0f;
                    for (int64_t i = 0; i < r_q; i++)
                        total += staged[c * lanes + ME_LANE_OF(q * r_q + i, P)];
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
    float *staged = aligned_alloc(64, (size_t)((ME_STAGE + 8) * max_lanes * 4));
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
                    transposed, buffer, staged, 8, P, K);                                       \
    else                                                                                      \
        score_group(queries, first, count, r_q, layout, r_c, start, stop, scores, stride,     \
                    transposed, buffer, staged, 4, 1, K);
        ME_DISPATCH_KIND(ME_GROUP)
    }
    free(transposed);
    free(buffer);
    free(staged);
    return 0;
}
