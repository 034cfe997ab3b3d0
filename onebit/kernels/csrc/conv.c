/* The packed binary convolution: the fused epilogue, the portable, POPCNT, AVX2 (nibble lookup) and AVX-512
 * VPOPCNTDQ kernels with their tile loops, and the entry point ob_conv that runs the selected ISA's variant. */
#include "bitconv.h"

/* ------------------------------------------------------------------------------------------------ epilogue */
/* Coordinates of one output pixel, computed once per tile (not per channel block: divisions are slow). */
typedef struct {
    int64_t pix, b; /* flat index over N*OH*OW, image */
    int64_t bo;     /* byte offset of the pixel's packed output bits in out_bits (set only when there are bits) */
    int32_t y, x;
} ob_pix;

__attribute__((always_inline)) static inline void ob_pixel(const ob_conv_args *a, int64_t pix, ob_pix *o) {
    const int64_t ohw = (int64_t)a->oh * a->ow;
    o->pix = pix;
    o->b = pix / ohw;
    o->y = (int32_t)((pix % ohw) / a->ow);
    o->x = (int32_t)(pix % a->ow);
}

/* Exact zero (or ±1) padding: add corr[tap][o0 + q] to dots[q] (q < nq) for every tap of output pixel (y, xo) that
 * falls outside the input (border pixels only: the test is inlined, the correction is not). */
__attribute__((noinline)) static void ob_pad_fix(const ob_conv_args *a, int32_t iy, int32_t ix, int32_t o0, int32_t nq,
                                                 int32_t *dots) {
    for (int32_t ky = 0; ky < a->kh; ky++) {
        for (int32_t kx = 0; kx < a->kw; kx++) {
            const int32_t yy = iy + ky, xx = ix + kx;
            if (yy >= 0 && yy < a->h && xx >= 0 && xx < a->w) continue;
            const int32_t *c = a->corr + (int64_t)(ky * a->kw + kx) * a->o + o0;
            for (int32_t q = 0; q < nq; q++) dots[q] += c[q];
        }
    }
}

__attribute__((always_inline)) static inline void ob_pad_correct(const ob_conv_args *a, int32_t y, int32_t xo,
                                                                 int32_t o0, int32_t nq, int32_t *dots) {
    const int32_t iy = y * a->stride - a->pad, ix = xo * a->stride - a->pad;
    if (iy >= 0 && ix >= 0 && iy + a->kh <= a->h && ix + a->kw <= a->w) return;
    if (a->ctab) {
        /* the taps outside the input depend only on the pixel's border class: one precomputed sum per channel */
        const int32_t *c = a->ctab + ((int64_t)a->crow[y] * a->cnc + a->ccol[xo]) * a->o + o0;
        for (int32_t q = 0; q < nq; q++) dots[q] += c[q];
        return;
    }
    ob_pad_fix(a, iy, ix, o0, nq, dots);
}

/* The border classes of the output positions along one axis (rows or columns): cls[i] indexes the distinct pairs
 * (taps cut before the input, taps cut after it) of output position i, lo[] and hi[] list those pairs. Returns the
 * number of classes. */
static int32_t ob_border_classes(int32_t out, int32_t in, int32_t k, int32_t stride, int32_t pad, int32_t *cls,
                                 int32_t *lo, int32_t *hi) {
    int32_t n = 0;
    for (int32_t i = 0; i < out; i++) {
        const int32_t s = i * stride - pad;
        int32_t l = s < 0 ? -s : 0, r = s + k > in ? s + k - in : 0;
        if (l > k) l = k;
        if (r > k) r = k;
        int32_t j = 0;
        while (j < n && (lo[j] != l || hi[j] != r)) j++;
        if (j == n) {
            lo[n] = l;
            hi[n] = r;
            n++;
        }
        cls[i] = j;
    }
    return n;
}

/* Fill a->ctab, crow, ccol, cnc: the sum of corr[tap][o] over the taps outside the input for every pair of row and
 * column border classes. Returns the one allocation that holds them (the caller frees it), or NULL: none (no memory,
 * or a large table: many classes from a large padding), the kernels then correct tap by tap. */
#define OB_CTAB_MAX_INTS (1 << 20)
static void *ob_border_table(ob_conv_args *a) {
    const int64_t side = (int64_t)a->oh + a->ow; /* class indices: crow [OH], ccol [OW]; then lo, hi [side] each */
    int32_t *buf = (int32_t *)malloc((size_t)(3 * side) * sizeof(int32_t));
    if (!buf) return NULL;
    int32_t *lo = buf + side, *hi = lo + side;
    const int32_t nr = ob_border_classes(a->oh, a->h, a->kh, a->stride, a->pad, buf, lo, hi);
    const int32_t nc = ob_border_classes(a->ow, a->w, a->kw, a->stride, a->pad, buf + a->oh, lo + a->oh, hi + a->oh);
    const int64_t ints = (int64_t)nr * nc * a->o;
    int32_t *all = ints <= OB_CTAB_MAX_INTS ? (int32_t *)realloc(buf, (size_t)(3 * side + ints) * sizeof(int32_t)) : 0;
    if (!all) {
        free(buf);
        return NULL;
    }
    lo = all + side;
    hi = lo + side;
    int32_t *tab = all + 3 * side;
    memset(tab, 0, (size_t)ints * sizeof(int32_t));
    for (int32_t ri = 0; ri < nr; ri++)
        for (int32_t ci = 0; ci < nc; ci++) {
            int32_t *t = tab + ((int64_t)ri * nc + ci) * a->o;
            const int32_t y0 = lo[ri], y1 = a->kh - hi[ri], x0 = lo[a->oh + ci], x1 = a->kw - hi[a->oh + ci];
            for (int32_t ky = 0; ky < a->kh; ky++)
                for (int32_t kx = 0; kx < a->kw; kx++) {
                    if (ky >= y0 && ky < y1 && kx >= x0 && kx < x1) continue; /* inside the input */
                    const int32_t *c = a->corr + (int64_t)(ky * a->kw + kx) * a->o;
                    for (int32_t q = 0; q < a->o; q++) t[q] += c[q];
                }
        }
    a->ctab = tab;
    a->crow = all;
    a->ccol = all + a->oh;
    a->cnc = nc;
    return all;
}

/* dots[p][q] are the -1-padded dot products of OB_TILE_Q channels starting at o0 for the np output pixels pi[0..np)
 * (consecutive flat indices; a tile may span rows and images). */
static inline void ob_epilogue(const ob_conv_args *a, const ob_pix *pi, int32_t np, int32_t o0,
                               int32_t dots[OB_TILE_P][OB_TILE_Q]) {
    const int32_t nq = (a->o - o0 < OB_TILE_Q) ? a->o - o0 : OB_TILE_Q;
    for (int32_t p = 0; p < np; p++) {
        const int64_t pix = pi[p].pix;
        const int32_t y = pi[p].y, xo = pi[p].x;
        if (a->corr) ob_pad_correct(a, y, xo, o0, nq, dots[p]);
        if (a->out_int)
            for (int32_t q = 0; q < nq; q++) a->out_int[pix * a->o + o0 + q] = dots[p][q];
        if (!a->out_f && !a->out_bits) continue;
        uint32_t byte = 0;
        for (int32_t q = 0; q < nq; q++) {
            const int32_t o = o0 + q;
            float v = (float)dots[p][q] * a->scale[o];
            if (a->bias) v = v + a->bias[o];
            if (a->res) v = v + a->res[pix * a->res_c + (o % a->res_c)];
            if (a->act_in) v = v + a->act_in[o];
            if (a->slope) v = v > 0.0f ? v : v * a->slope[o];
            if (a->act_out) v = v + a->act_out[o];
            if (a->out_f) a->out_f[pix * a->o + o] = v;
            if (a->thresh) byte |= (uint32_t)!(v + a->thresh[o] < 0.0f) << q;
            else byte |= (uint32_t)!(v < 0.0f) << q;
        }
        if (a->out_bits) a->out_bits[pi[p].bo + o0 / 8] = (uint8_t)byte;
    }
}

/* ------------------------------------------------------------------------------------------------ kernels */
/* Each kernel computes popcount(x XOR w) over the KH kernel rows (KW*K contiguous words each) for np pixels of one
 * output row and 8 output channels, then hands dot = KH*KW*C - 2 popcount to the epilogue. */

/* Output channels are processed in groups whose weights (both nibble copies) stay within ~128 KiB of cache, each
 * group over every pixel tile: streaming all weights per tile would run from L3 once they outgrow L2 (C >= 512). */
#define OB_GROUP_BYTES (64 * 1024)
/* the AVX2 kernel's split weights (16 bytes per packed word): a group that stays in L1 next to the input rows */
#ifndef OB_SPLIT_GROUP_BYTES
#define OB_SPLIT_GROUP_BYTES (24 * 1024)
#endif
#define OB_TILE_LOOP(KERNEL, EPI)                                                                             \
    const int32_t o8 = (a->o + OB_TILE_Q - 1) / OB_TILE_Q;                                                    \
    const int64_t npix = (int64_t)a->n * a->oh * a->ow;                                                       \
    const int64_t tiles = (npix + OB_TILE_P - 1) / OB_TILE_P;                                                 \
    const int64_t ob_bytes = (int64_t)a->kh * a->kw * (a->k) * OB_TILE_Q * 16;                                \
    const int32_t group = ob_bytes >= OB_GROUP_BYTES ? 1 : (int32_t)(OB_GROUP_BYTES / ob_bytes);              \
    _Pragma("omp parallel num_threads(a->nthreads)") for (int32_t g0 = 0; g0 < o8; g0 += group) {            \
        const int32_t g1 = (o8 - g0 < group) ? o8 : g0 + group;                                               \
        _Pragma("omp for schedule(static)") for (int64_t it = 0; it < tiles; it++) {                          \
            const int64_t pix0 = it * OB_TILE_P;                                                              \
            const int32_t np = (npix - pix0 < OB_TILE_P) ? (int32_t)(npix - pix0) : OB_TILE_P;               \
            const uint64_t *xb[OB_TILE_P];                                                                    \
            ob_pix pi[OB_TILE_P];                                                                             \
            ob_tile_pixels(a, pix0, np, pi, xb);                                                              \
            for (int32_t ob = g0; ob < g1; ob++) {                                                            \
                int32_t dots[OB_TILE_P][OB_TILE_Q];                                                           \
                if (np == OB_TILE_P) KERNEL(a, xb, ob, OB_TILE_P, dots);                                      \
                else for (int32_t p = 0; p < np; p++) KERNEL(a, xb + p, ob, 1, dots + p);                     \
                EPI(a, pi, np, ob * OB_TILE_Q, dots);                                                         \
            }                                                                                                 \
        }                                                                                                     \
    }

/* byte offset of output pixel (b, y, x) in the packed output (whose border is bph, bpw; bk words per pixel) */
__attribute__((always_inline)) static inline int64_t ob_bits_at(const ob_conv_args *a, int64_t b, int32_t y, int32_t x) {
    const int64_t wpo = a->ow + 2 * (int64_t)a->bpw, hpo = a->oh + 2 * (int64_t)a->bph;
    return (((b * hpo) + y + a->bph) * wpo + x + a->bpw) * (int64_t)a->bk * 8;
}

/* The first input word read by output pixel `pix` (top-left tap); kernel row ky starts ky * wp * k words later. */
__attribute__((always_inline)) static inline const uint64_t *ob_xbase(const ob_conv_args *a, const ob_pix *q) {
    return a->x + (((q->b * a->hp) + (int64_t)q->y * a->stride) * a->wp + (int64_t)q->x * a->stride) * a->k;
}

/* Coordinates and first input words of the np consecutive output pixels from flat index pix0: one division for
 * the first, then stepping along the row (a tile may span rows and images). */
__attribute__((always_inline)) static inline void ob_tile_pixels(const ob_conv_args *a, int64_t pix0, int32_t np, ob_pix *pi, const uint64_t **xb) {
    ob_pixel(a, pix0, pi);
    xb[0] = ob_xbase(a, pi);
    for (int32_t p = 1; p < np; p++) {
        ob_pix q = pi[p - 1];
        q.pix++;
        if (++q.x == a->ow) {
            q.x = 0;
            if (++q.y == a->oh) {
                q.y = 0;
                q.b++;
            }
        }
        pi[p] = q;
        xb[p] = ob_xbase(a, pi + p);
    }
    if (a->out_bits)
        for (int32_t p = 0; p < np; p++) pi[p].bo = ob_bits_at(a, pi[p].b, pi[p].y, pi[p].x);
}

#define OB_SCALAR_KERNEL_BODY(POPCNT)                                                                               \
    const int32_t J = a->kw * a->k;                                                                                 \
    const int32_t nbits = a->kh * a->kw * a->c;                                                                     \
    int32_t cnt[OB_TILE_P][OB_TILE_Q] = {{0}};                                                                      \
    for (int32_t ky = 0; ky < a->kh; ky++) {                                                                        \
        const uint64_t *wr = a->wq + (((int64_t)ob * a->kh + ky) * J) * OB_TILE_Q;                                  \
        const uint64_t *xr[OB_TILE_P];                                                                              \
        for (int32_t p = 0; p < P; p++) xr[p] = xb[p] + (int64_t)ky * a->wp * a->k;                                       \
        for (int32_t j = 0; j < J; j++) {                                                                           \
            for (int32_t p = 0; p < P; p++) {                                                                       \
                const uint64_t xv = xr[p][j];                                                                       \
                for (int32_t q = 0; q < OB_TILE_Q; q++) cnt[p][q] += (int32_t)POPCNT(xv ^ wr[j * OB_TILE_Q + q]);   \
            }                                                                                                       \
        }                                                                                                           \
    }                                                                                                               \
    for (int32_t p = 0; p < P; p++)                                                                                 \
        for (int32_t q = 0; q < OB_TILE_Q; q++) dots[p][q] = nbits - 2 * cnt[p][q];

__attribute__((always_inline)) static inline void ob_kernel_portable(const ob_conv_args *a, const uint64_t *const *xb, int32_t ob, const int P,
                                      int32_t dots[][OB_TILE_Q]) {
    OB_SCALAR_KERNEL_BODY(ob_popcount_portable)
}

static void ob_conv_portable(const ob_conv_args *a) { OB_TILE_LOOP(ob_kernel_portable, ob_epilogue) }

#if OB_X86 && defined(__GNUC__)
__attribute__((target("popcnt"), always_inline)) static inline void ob_kernel_popcnt(const ob_conv_args *a, const uint64_t *const *xb, int32_t ob, const int P,
                                                                        int32_t dots[][OB_TILE_Q]) {
    OB_SCALAR_KERNEL_BODY(__builtin_popcountll)
}

__attribute__((target("popcnt"))) static void ob_conv_popcnt(const ob_conv_args *a) {
    OB_TILE_LOOP(ob_kernel_popcnt, ob_epilogue)
}

/* The per-call scalars of a vectorised epilogue over channels o0.. (copied out of the argument struct once: the
 * float stores could alias it, so the compiler would otherwise reload every field for every pixel). */
typedef struct {
    const float *res;  /* at channel o0 % res_c of pixel 0, or NULL */
    float *out_f;      /* at channel o0 of pixel 0, or NULL */
    int32_t *out_int;  /* at channel o0 of pixel 0, or NULL */
    uint8_t *out_bits; /* at byte o0 / 8 of the first packed pixel, or NULL */
    int64_t res_c, o;
    int has_bias, has_in, has_slope, has_out, has_t;
} ob_epi;

__attribute__((always_inline)) static inline ob_epi ob_epi_of(const ob_conv_args *a, int32_t o0) {
    ob_epi e;
    e.res = a->res ? a->res + (o0 % a->res_c) : 0;
    e.out_f = a->out_f ? a->out_f + o0 : 0;
    e.out_int = a->out_int ? a->out_int + o0 : 0;
    e.out_bits = a->out_bits ? a->out_bits + o0 / 8 : 0;
    e.res_c = a->res_c;
    e.o = a->o;
    e.has_bias = a->bias != 0;
    e.has_in = a->act_in != 0;
    e.has_slope = a->slope != 0;
    e.has_out = a->act_out != 0;
    e.has_t = a->thresh != 0;
    return e;
}

/* The epilogue of ob_epilogue on 8 channels at once (bitwise the same float operations); scalar for a partial tile.
 * RES, OUTF, BITS say whether a->res, a->out_f, a->out_bits are set: compile-time constants where the AVX2 tile loop
 * inlines it (one specialisation each, no per-pixel tests), plain flags elsewhere. The optional per-channel parts run
 * unconditionally with a neutral operand when absent: + (-0.0f) is the identity of float addition (also on -0.0 and
 * NaN) and PReLU with slope 1 returns v, so the results are those of the operations that were asked for. */
__attribute__((target("avx2"), always_inline)) static inline void ob_epilogue_avx2(const ob_conv_args *a, const ob_pix *pi, int32_t np,
                                                                     int32_t o0,
                                                                     int32_t dots[OB_TILE_P][OB_TILE_Q],
                                                                     const int RES, const int OUTF, const int BITS) {
    if (a->o - o0 < OB_TILE_Q || (RES && (o0 % a->res_c) + OB_TILE_Q > a->res_c)) {
        ob_epilogue(a, pi, np, o0, dots);
        return;
    }
    const __m256 fzero = _mm256_setzero_ps(), nzero = _mm256_set1_ps(-0.0f);
    const __m256 scale = _mm256_loadu_ps(a->scale + o0);
    const __m256 bias = a->bias ? _mm256_loadu_ps(a->bias + o0) : nzero;
    const __m256 act_in = a->act_in ? _mm256_loadu_ps(a->act_in + o0) : nzero;
    const __m256 slope = a->slope ? _mm256_loadu_ps(a->slope + o0) : _mm256_set1_ps(1.0f);
    const __m256 act_out = a->act_out ? _mm256_loadu_ps(a->act_out + o0) : nzero;
    const __m256 thresh = a->thresh ? _mm256_loadu_ps(a->thresh + o0) : nzero;
    const ob_epi e = ob_epi_of(a, o0);
    const int32_t *corr = a->corr;
    for (int32_t p = 0; p < np; p++) {
        const int64_t pix = pi[p].pix;
        if (corr) ob_pad_correct(a, pi[p].y, pi[p].x, o0, OB_TILE_Q, dots[p]);
        __m256i d = _mm256_loadu_si256((const __m256i *)dots[p]);
        if (e.out_int) _mm256_storeu_si256((__m256i *)(e.out_int + pix * e.o), d);
        if (!OUTF && !BITS) continue;
        __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(d), scale);
        v = _mm256_add_ps(v, bias);
        if (RES) v = _mm256_add_ps(v, _mm256_loadu_ps(e.res + pix * e.res_c));
        v = _mm256_add_ps(v, act_in);
        v = _mm256_blendv_ps(_mm256_mul_ps(v, slope), v, _mm256_cmp_ps(v, fzero, _CMP_GT_OQ));
        v = _mm256_add_ps(v, act_out);
        if (OUTF) _mm256_storeu_ps(e.out_f + pix * e.o, v);
        if (BITS) {
            const __m256 t = _mm256_add_ps(v, thresh);
            const int byte = _mm256_movemask_ps(_mm256_cmp_ps(t, fzero, _CMP_NLT_UQ));
            e.out_bits[pi[p].bo] = (uint8_t)byte;
        }
    }
}

/* one word j of the receptive field for P pixels and 8 channels (AVX2 inner loop) */
#define OB_AVX2_STEP const __m256i wl0 = _mm256_load_si256((const __m256i *)(wl + j * 16)); const __m256i wl1 = _mm256_load_si256((const __m256i *)(wl + j * 16 + 4)); const __m256i wh0 = _mm256_load_si256((const __m256i *)(wl + j * 16 + 8)); const __m256i wh1 = _mm256_load_si256((const __m256i *)(wl + j * 16 + 12)); for (int p = 0; p < P; p++) { const __m256i xl = _mm256_set1_epi64x((long long)xr[p][2 * j]); const __m256i xh = _mm256_set1_epi64x((long long)xr[p][2 * j + 1]); acc[p][0] = _mm256_add_epi8(acc[p][0], _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_xor_si256(xl, wl0)), _mm256_shuffle_epi8(lut, _mm256_xor_si256(xh, wh0)))); acc[p][1] = _mm256_add_epi8(acc[p][1], _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_xor_si256(xl, wl1)), _mm256_shuffle_epi8(lut, _mm256_xor_si256(xh, wh1)))); }
#define OB_AVX2_STORE_DOTS                                                                                      \
    {                                                                                                           \
        /* the low 32 bits of the 8 64-bit counts, in channel order */                                          \
        const __m256 s = _mm256_shuffle_ps(_mm256_castsi256_ps(lo), _mm256_castsi256_ps(hi), _MM_SHUFFLE(2, 0, 2, 0)); \
        const __m256i cnt = _mm256_permute4x64_epi64(_mm256_castps_si256(s), _MM_SHUFFLE(3, 1, 2, 0));          \
        _mm256_storeu_si256((__m256i *)dots[p], _mm256_sub_epi32(nb, _mm256_slli_epi32(cnt, 1)));               \
    }

/* AVX2: 4 channels (one 64-bit lane each) per 256-bit vector, two vectors per tile. Popcount by the nibble lookup
 * (vpshufb) into byte counters, emptied into 64-bit lanes with vpsadbw before a byte can overflow (<= 8 per word,
 * so every 31 words). The weight nibbles are split once up front; the input word is broadcast and split per tap. */
__attribute__((target("avx2,popcnt"), always_inline)) static inline void ob_kernel_avx2(
    const ob_conv_args *a, const uint64_t *const *xb, const uint64_t *wblk, const int P, int32_t dots[][OB_TILE_Q]) {
    const int32_t J = a->kw * (a->k / 2); /* a->x holds nibble-split pairs: 2 words per packed word */
    const int32_t nbits = a->kh * a->kw * a->c;
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2,
                                         2, 3, 2, 3, 3, 4);
    const __m256i zero = _mm256_setzero_si256();
    const __m256i nb = _mm256_set1_epi32(nbits);
    if (a->kh * J <= 31) {
        /* every word of the receptive field fits the byte counters: no intermediate flush (all 1x1 convs and 3x3
         * ones up to 320 channels) */
        __m256i acc[OB_TILE_P][2];
        for (int p = 0; p < P; p++) acc[p][0] = acc[p][1] = zero;
        for (int32_t ky = 0; ky < a->kh; ky++) {
            const uint64_t *wl = wblk + (int64_t)ky * J * 2 * OB_TILE_Q;
            const uint64_t *xr[OB_TILE_P];
            for (int p = 0; p < P; p++) xr[p] = xb[p] + (int64_t)ky * a->wp * a->k;
            for (int32_t j = 0; j < J; j++) {
                OB_AVX2_STEP
            }
        }
        for (int p = 0; p < P; p++) {
            const __m256i lo = _mm256_sad_epu8(acc[p][0], zero), hi = _mm256_sad_epu8(acc[p][1], zero);
            OB_AVX2_STORE_DOTS
        }
        return;
    }
    /* 64-bit totals live in memory: touched once per <= 31 words, so the byte counters keep the registers */
    int64_t tot[OB_TILE_P][8] __attribute__((aligned(32))) = {{0}};
    for (int32_t ky = 0; ky < a->kh; ky++) {
        const uint64_t *wl = wblk + (int64_t)ky * J * 2 * OB_TILE_Q;
        const uint64_t *xr[OB_TILE_P];
        for (int p = 0; p < P; p++) xr[p] = xb[p] + (int64_t)ky * a->wp * a->k;
        for (int32_t j0 = 0; j0 < J; j0 += 31) {
            const int32_t j1 = (J - j0 < 31) ? J : j0 + 31;
            __m256i acc[OB_TILE_P][2];
            for (int p = 0; p < P; p++) acc[p][0] = acc[p][1] = zero;
            for (int32_t j = j0; j < j1; j++) {
                OB_AVX2_STEP
            }
            for (int p = 0; p < P; p++) {
                __m256i *t0 = (__m256i *)tot[p], *t1 = (__m256i *)(tot[p] + 4);
                _mm256_store_si256(t0, _mm256_add_epi64(_mm256_load_si256(t0), _mm256_sad_epu8(acc[p][0], zero)));
                _mm256_store_si256(t1, _mm256_add_epi64(_mm256_load_si256(t1), _mm256_sad_epu8(acc[p][1], zero)));
            }
        }
    }

    for (int p = 0; p < P; p++) {
        const __m256i lo = _mm256_load_si256((const __m256i *)tot[p]);
        const __m256i hi = _mm256_load_si256((const __m256i *)(tot[p] + 4));
        OB_AVX2_STORE_DOTS
    }
}

/* whether the AVX2 tile loop runs ob_kernel_avx2_narrow (a: the nibble-split arguments, k = 2 per packed word) */
static inline int ob_avx2_narrow(const ob_conv_args *a) { return a->k == 2 && a->c <= 32; }

/* AVX2 for inputs of at most 32 channels (one packed word a pixel whose high 32 bits are 0 in the input and in the
 * weights): 8 channels (one 32-bit lane each) per vector instead of 4 per 64-bit lane, half the work of
 * ob_kernel_avx2 on these half-empty words. The weights are split per tap as [lo: 8 x u32 | hi: 8 x u32]
 * (ob_split_group_narrow); the byte counters are summed per 32-bit lane (vpmaddubsw, vpmaddwd) before they overflow. */
__attribute__((target("avx2,popcnt"), always_inline)) static inline void ob_kernel_avx2_narrow(
    const ob_conv_args *a, const uint64_t *const *xb, const uint64_t *wblk, const int P, int32_t dots[][OB_TILE_Q]) {
    const int32_t taps = a->kh * a->kw; /* a->x holds the nibble-split pair (lo, hi) of every packed word */
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2,
                                         2, 3, 2, 3, 3, 4);
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    __m256i tot[OB_TILE_P], acc[OB_TILE_P];
    for (int p = 0; p < P; p++) tot[p] = acc[p] = _mm256_setzero_si256();
    int32_t fill = 0; /* taps in the byte counters (<= 31: each adds at most 8 to a byte) */
    for (int32_t ky = 0; ky < a->kh; ky++) {
        const uint32_t *wl = (const uint32_t *)wblk + (int64_t)ky * a->kw * 16;
        for (int32_t kx = 0; kx < a->kw; kx++) {
            const __m256i w0 = _mm256_load_si256((const __m256i *)(wl + kx * 16));
            const __m256i w1 = _mm256_load_si256((const __m256i *)(wl + kx * 16 + 8));
            for (int p = 0; p < P; p++) {
                const uint64_t *xw = xb[p] + ((int64_t)ky * a->wp + kx) * 2;
                const __m256i xl = _mm256_set1_epi32((int)(uint32_t)xw[0]);
                const __m256i xh = _mm256_set1_epi32((int)(uint32_t)xw[1]);
                acc[p] = _mm256_add_epi8(acc[p], _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_xor_si256(xl, w0)),
                                                                 _mm256_shuffle_epi8(lut, _mm256_xor_si256(xh, w1))));
            }
            if (++fill == 31) {
                for (int p = 0; p < P; p++) {
                    tot[p] = _mm256_add_epi32(tot[p], _mm256_madd_epi16(_mm256_maddubs_epi16(acc[p], ones8), ones16));
                    acc[p] = _mm256_setzero_si256();
                }
                fill = 0;
            }
        }
    }
    const __m256i nb = _mm256_set1_epi32(taps * a->c);
    for (int p = 0; p < P; p++) {
        const __m256i cnt = _mm256_add_epi32(tot[p], _mm256_madd_epi16(_mm256_maddubs_epi16(acc[p], ones8), ones16));
        _mm256_storeu_si256((__m256i *)dots[p], _mm256_sub_epi32(nb, _mm256_slli_epi32(cnt, 1)));
    }
}

/* ob_split_group for ob_kernel_avx2_narrow: per block [KH][KW][lo 8 | hi 8] 32-bit words (the low halves of the
 * packed words; their high halves are 0). */
__attribute__((target("avx2"))) static inline void ob_split_group_narrow(const ob_conv_args *a, uint64_t *wbuf,
                                                                         int64_t blk_words, int32_t g0, int32_t g1) {
    const uint32_t m = 0x0F0F0F0FU;
    const uint64_t *src = a->wq + (int64_t)g0 * blk_words;
    uint32_t *dst = (uint32_t *)wbuf;
    for (int64_t i = 0; i < (int64_t)(g1 - g0) * blk_words / OB_TILE_Q; i++) {
        for (int q = 0; q < OB_TILE_Q; q++) {
            const uint32_t v = (uint32_t)src[i * OB_TILE_Q + q];
            dst[i * 2 * OB_TILE_Q + q] = v & m;
            dst[i * 2 * OB_TILE_Q + OB_TILE_Q + q] = (v >> 4) & m;
        }
    }
}

/* Split output blocks [g0, g1) of the packed weights into wbuf (per block [KH][KW*K][lo 8 | hi 8] words). */
__attribute__((target("avx2"))) static inline void ob_split_group(const ob_conv_args *a, uint64_t *wbuf, int64_t blk_words,
                                                                  int32_t g0, int32_t g1) {
    const uint64_t m = 0x0F0F0F0F0F0F0F0FULL;
    const uint64_t *src = a->wq + (int64_t)g0 * blk_words;
    for (int64_t i = 0; i < (int64_t)(g1 - g0) * blk_words / OB_TILE_Q; i++) {
        for (int q = 0; q < OB_TILE_Q; q++) {
            const uint64_t v = src[i * OB_TILE_Q + q];
            wbuf[i * 2 * OB_TILE_Q + q] = v & m;
            wbuf[i * 2 * OB_TILE_Q + OB_TILE_Q + q] = (v >> 4) & m;
        }
    }
}

__attribute__((target("avx2"))) static inline void ob_split(const ob_conv_args *a, uint64_t *wbuf, int64_t blk_words,
                                                            int32_t g0, int32_t g1) {
    if (ob_avx2_narrow(a)) ob_split_group_narrow(a, wbuf, blk_words, g0, g1);
    else ob_split_group(a, wbuf, blk_words, g0, g1);
}

/* Pixel tile `it` against the split output blocks [g0, g1) in wbuf, with the epilogue (RES, OUTF, BITS: see
 * ob_epilogue_avx2). */
__attribute__((target("avx2,popcnt"), always_inline)) static inline void ob_avx2_tile_t(
    const ob_conv_args *a, const uint64_t *wbuf, int64_t blk_words, int32_t g0, int32_t g1, int64_t npix, int64_t it,
    const int RES, const int OUTF, const int BITS) {
    const int64_t pix0 = it * OB_TILE_P;
    const int32_t np = (npix - pix0 < OB_TILE_P) ? (int32_t)(npix - pix0) : OB_TILE_P;
    const uint64_t *xb[OB_TILE_P];
    ob_pix pi[OB_TILE_P];
    ob_tile_pixels(a, pix0, np, pi, xb);
    const int narrow = ob_avx2_narrow(a);
    for (int32_t ob = g0; ob < g1; ob++) {
        int32_t dots[OB_TILE_P][OB_TILE_Q];
        if (narrow) {
            const uint64_t *wblk = wbuf + (int64_t)(ob - g0) * blk_words;
            if (np == OB_TILE_P) ob_kernel_avx2_narrow(a, xb, wblk, OB_TILE_P, dots);
            else for (int32_t p = 0; p < np; p++) ob_kernel_avx2_narrow(a, xb + p, wblk, 1, dots + p);
        } else {
            const uint64_t *wblk = wbuf + (int64_t)(ob - g0) * 2 * blk_words;
            if (np == OB_TILE_P) ob_kernel_avx2(a, xb, wblk, OB_TILE_P, dots);
            else for (int32_t p = 0; p < np; p++) ob_kernel_avx2(a, xb + p, wblk, 1, dots + p);
        }
        ob_epilogue_avx2(a, pi, np, ob * OB_TILE_Q, dots, RES, OUTF, BITS);
    }
}

/* ob_avx2_tile_t specialised on which outputs the call has (a residual, a float output, packed bits): the combinations
 * of the fused models, and one with run-time flags */
__attribute__((target("avx2,popcnt"), always_inline)) static inline void ob_avx2_tile(const ob_conv_args *a,
                                                                                  const uint64_t *wbuf,
                                                                                  int64_t blk_words, int32_t g0,
                                                                                  int32_t g1, int64_t npix, int64_t it) {
    const int res = a->res != 0, outf = a->out_f != 0, bits = a->out_bits != 0;
    if (res && outf && bits) ob_avx2_tile_t(a, wbuf, blk_words, g0, g1, npix, it, 1, 1, 1); /* ReActNet blocks */
    else if (res && outf && !bits) ob_avx2_tile_t(a, wbuf, blk_words, g0, g1, npix, it, 1, 1, 0);
    else if (!res && outf && !bits) ob_avx2_tile_t(a, wbuf, blk_words, g0, g1, npix, it, 0, 1, 0); /* BNext */
    else ob_avx2_tile_t(a, wbuf, blk_words, g0, g1, npix, it, res, outf, bits);                 /* the rest */
}

/* The tile loop of the AVX2 kernel, which reads the weights nibble-split: a thread splits the group of output
 * blocks it is about to use into its own buffer (32-byte aligned), so that the model keeps one packed copy of its
 * weights; the split group (<= OB_SPLIT_GROUP_BYTES unless one block is larger) then serves many pixel tiles from L1.
 * Work is shared by groups when there are enough of them (each group split once, no barrier per group, even
 * shares on small feature maps: 7x7, 14x14), else by pixel tiles within each group (few, wide-output layers). */
__attribute__((target("avx2,popcnt"))) static void ob_conv_avx2_split(const ob_conv_args *a, uint64_t *wbuf_all,
                                                                       int64_t group_words, int32_t group) {
    const int32_t o8 = (a->o + OB_TILE_Q - 1) / OB_TILE_Q;
    const int64_t npix = (int64_t)a->n * a->oh * a->ow;
    const int64_t tiles = (npix + OB_TILE_P - 1) / OB_TILE_P;
    const int64_t blk_words = (int64_t)a->kh * a->kw * (a->k / 2) * OB_TILE_Q; /* words of one block in wq */
    const int32_t ngroups = (o8 + group - 1) / group;
    const int by_group = a->nthreads > 1 && ngroups >= 4 * a->nthreads;
#pragma omp parallel num_threads(a->nthreads)
    {
#ifdef _OPENMP
        uint64_t *wbuf = wbuf_all + (int64_t)omp_get_thread_num() * group_words;
#else
        uint64_t *wbuf = wbuf_all;
#endif
        if (by_group) {
#pragma omp for schedule(dynamic, 1)
            for (int32_t gi = 0; gi < ngroups; gi++) {
                const int32_t g0 = gi * group, g1 = (o8 - g0 < group) ? o8 : g0 + group;
                ob_split(a, wbuf, blk_words, g0, g1);
                for (int64_t it = 0; it < tiles; it++) ob_avx2_tile(a, wbuf, blk_words, g0, g1, npix, it);
            }
        } else {
            for (int32_t g0 = 0; g0 < o8; g0 += group) {
                const int32_t g1 = (o8 - g0 < group) ? o8 : g0 + group;
                ob_split(a, wbuf, blk_words, g0, g1);
#pragma omp for schedule(static)
                for (int64_t it = 0; it < tiles; it++) ob_avx2_tile(a, wbuf, blk_words, g0, g1, npix, it);
            }
        }
    }
}

/* The AVX2 kernel reads the input split into nibbles (low, high) word pairs: one pass over the input (small next
 * to the convolution's work) saves the split on every (pixel, word, output block) in the inner loop. Returns 0 when
 * the temporary buffer cannot be allocated. */
__attribute__((target("avx2,popcnt"))) static int ob_conv_avx2(const ob_conv_args *a) {
    const int64_t words = (int64_t)a->n * a->hp * a->wp * a->k;
    const int64_t blk_words = (int64_t)a->kh * a->kw * a->k * OB_TILE_Q;
    const int32_t o8 = (a->o + OB_TILE_Q - 1) / OB_TILE_Q;
    int32_t group = blk_words * 16 >= OB_SPLIT_GROUP_BYTES ? 1 : (int32_t)(OB_SPLIT_GROUP_BYTES / (blk_words * 16));
    if (group > o8) group = o8;
    const int64_t group_words = 2 * blk_words * group;
    const int32_t nthr = a->nthreads > 0 ? a->nthreads : 1;
    uint64_t *wbuf = (uint64_t *)aligned_alloc(32, (size_t)(group_words * nthr) * sizeof(uint64_t));
    if (!wbuf) return 0;
    uint64_t *xs = (uint64_t *)malloc((size_t)(2 * words + 4) * sizeof(uint64_t));
    if (!xs) {
        free(wbuf);
        return 0;
    }
    const uint64_t m = 0x0F0F0F0F0F0F0F0FULL;
#pragma omp parallel for schedule(static) num_threads(a->nthreads)
    for (int64_t i = 0; i < words; i++) {
        const uint64_t v = a->x[i];
        xs[2 * i] = v & m;
        xs[2 * i + 1] = (v >> 4) & m;
    }
    ob_conv_args s = *a;
    s.x = xs;
    s.k = 2 * a->k;
    ob_conv_avx2_split(&s, wbuf, group_words, group);
    free(xs);
    free(wbuf);
    return 1;
}

/* AVX-512 VPOPCNTDQ: a register tile of OB_P512 pixels x 16 output channels (two blocks of 8, one 512-bit vector
 * of 64-bit counts each); popcount per 64-bit lane directly, the weights read as packed (no split). */
#define OB_P512 4
#define OB_Q512 16
#define OB_AVX512_TARGET "avx512f,avx512vl,avx512dq,avx512bw,avx512vpopcntdq,popcnt"

/* dots of NB blocks (1 or 2) starting at block ob for P pixels (P, NB compile-time after inlining) */
__attribute__((target(OB_AVX512_TARGET), always_inline)) static inline void ob_kernel_avx512(
    const ob_conv_args *a, const uint64_t *const *xb, int32_t ob, const int NB, const int P, int32_t dots[][OB_Q512]) {
    const int32_t J = a->kw * a->k;
    const int64_t bw = (int64_t)a->kh * J * OB_TILE_Q; /* words of one block */
    __m512i acc[OB_P512][2];
    for (int p = 0; p < P; p++) acc[p][0] = acc[p][1] = _mm512_setzero_si512();
    for (int32_t ky = 0; ky < a->kh; ky++) {
        const uint64_t *wr = a->wq + ob * bw + (int64_t)ky * J * OB_TILE_Q;
        const uint64_t *xr[OB_P512];
        for (int p = 0; p < P; p++) xr[p] = xb[p] + (int64_t)ky * a->wp * a->k;
        for (int32_t j = 0; j < J; j++) {
            const __m512i w0 = _mm512_loadu_si512((const void *)(wr + j * OB_TILE_Q));
            const __m512i w1 = NB == 2 ? _mm512_loadu_si512((const void *)(wr + bw + j * OB_TILE_Q)) : w0;
            for (int p = 0; p < P; p++) {
                const __m512i xv = _mm512_set1_epi64((long long)xr[p][j]);
                acc[p][0] = _mm512_add_epi64(acc[p][0], _mm512_popcnt_epi64(_mm512_xor_si512(xv, w0)));
                if (NB == 2) acc[p][1] = _mm512_add_epi64(acc[p][1], _mm512_popcnt_epi64(_mm512_xor_si512(xv, w1)));
            }
        }
    }
    const __m256i nb = _mm256_set1_epi32(a->kh * a->kw * a->c);
    for (int p = 0; p < P; p++) {
        _mm256_storeu_si256((__m256i *)dots[p], _mm256_sub_epi32(nb, _mm256_slli_epi32(_mm512_cvtepi64_epi32(acc[p][0]), 1)));
        if (NB == 2)
            _mm256_storeu_si256((__m256i *)(dots[p] + 8),
                                _mm256_sub_epi32(nb, _mm256_slli_epi32(_mm512_cvtepi64_epi32(acc[p][1]), 1)));
    }
}

/* The epilogue of ob_epilogue on 16 channels o0.. (o0 a multiple of 16) at once, bitwise the same float operations;
 * a partial tile (or a residual that wraps inside it) goes 8 channels at a time through ob_epilogue_avx2. */
__attribute__((target(OB_AVX512_TARGET), always_inline)) static inline void ob_epilogue_avx512(
    const ob_conv_args *a, const ob_pix *pi, int32_t np, int32_t o0, int32_t nq, int32_t dots[OB_P512][OB_Q512]) {
    if (nq < OB_Q512 || a->o - o0 < OB_Q512 || (a->res && (o0 % a->res_c) + OB_Q512 > a->res_c)) {
        for (int32_t h = 0; h < nq; h += OB_TILE_Q) {
            int32_t d8[OB_TILE_P][OB_TILE_Q];
            for (int32_t p = 0; p < np; p++) memcpy(d8[p], dots[p] + h, sizeof d8[p]);
            ob_epilogue_avx2(a, pi, np, o0 + h, d8, a->res != 0, a->out_f != 0, a->out_bits != 0);
        }
        return;
    }
    const __m512 fzero = _mm512_setzero_ps();
    const __m512 scale = _mm512_loadu_ps(a->scale + o0);
    const __m512 bias = a->bias ? _mm512_loadu_ps(a->bias + o0) : fzero;
    const __m512 act_in = a->act_in ? _mm512_loadu_ps(a->act_in + o0) : fzero;
    const __m512 slope = a->slope ? _mm512_loadu_ps(a->slope + o0) : fzero;
    const __m512 act_out = a->act_out ? _mm512_loadu_ps(a->act_out + o0) : fzero;
    const __m512 thresh = a->thresh ? _mm512_loadu_ps(a->thresh + o0) : fzero;
    const ob_epi e = ob_epi_of(a, o0);
    for (int32_t p = 0; p < np; p++) {
        const int64_t pix = pi[p].pix;
        const int32_t y = pi[p].y, xo = pi[p].x;
        if (a->corr) ob_pad_correct(a, y, xo, o0, OB_Q512, dots[p]);
        const __m512i d = _mm512_loadu_si512((const void *)dots[p]);
        if (e.out_int) _mm512_storeu_si512((void *)(e.out_int + pix * e.o), d);
        if (!e.out_f && !e.out_bits) continue;
        __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(d), scale);
        if (e.has_bias) v = _mm512_add_ps(v, bias);
        if (e.res) v = _mm512_add_ps(v, _mm512_loadu_ps(e.res + pix * e.res_c));
        if (e.has_in) v = _mm512_add_ps(v, act_in);
        if (e.has_slope) v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, fzero, _CMP_GT_OQ), _mm512_mul_ps(v, slope), v);
        if (e.has_out) v = _mm512_add_ps(v, act_out);
        if (e.out_f) _mm512_storeu_ps(e.out_f + pix * e.o, v);
        if (e.out_bits) {
            const __m512 t = e.has_t ? _mm512_add_ps(v, thresh) : v;
            const uint16_t bits16 = (uint16_t)_mm512_cmp_ps_mask(t, fzero, _CMP_NLT_UQ);
            memcpy(e.out_bits + pi[p].bo, &bits16, sizeof bits16);
        }
    }
}

/* Pixel tile `it` against output blocks [g0, g1), two blocks (16 channels) at a time. */
__attribute__((target(OB_AVX512_TARGET), always_inline)) static inline void ob_avx512_tile(const ob_conv_args *a,
                                                                                         int32_t g0, int32_t g1,
                                                                                         int64_t npix, int64_t it) {
    const int64_t pix0 = it * OB_P512;
    const int32_t np = (npix - pix0 < OB_P512) ? (int32_t)(npix - pix0) : OB_P512;
    const uint64_t *xb[OB_P512];
    ob_pix pi[OB_P512];
    ob_tile_pixels(a, pix0, np, pi, xb);
    for (int32_t ob = g0; ob < g1; ob += 2) {
        int32_t dots[OB_P512][OB_Q512];
        if (g1 - ob >= 2) {
            if (np == OB_P512) ob_kernel_avx512(a, xb, ob, 2, OB_P512, dots);
            else for (int32_t p = 0; p < np; p++) ob_kernel_avx512(a, xb + p, ob, 2, 1, dots + p);
            ob_epilogue_avx512(a, pi, np, ob * OB_TILE_Q, OB_Q512, dots);
        } else {
            if (np == OB_P512) ob_kernel_avx512(a, xb, ob, 1, OB_P512, dots);
            else for (int32_t p = 0; p < np; p++) ob_kernel_avx512(a, xb + p, ob, 1, 1, dots + p);
            ob_epilogue_avx512(a, pi, np, ob * OB_TILE_Q, OB_TILE_Q, dots);
        }
    }
}

/* Output blocks in groups of an even count whose weights stay in L2 (each group over every pixel tile); work
 * shared by groups when there are enough of them (no barrier per group), else by pixel tiles within each group. */
#ifndef OB_GROUP512_BYTES
#define OB_GROUP512_BYTES (64 * 1024)
#endif
__attribute__((target(OB_AVX512_TARGET))) static void ob_conv_avx512(const ob_conv_args *a) {
    const int32_t o8 = (a->o + OB_TILE_Q - 1) / OB_TILE_Q;
    const int64_t npix = (int64_t)a->n * a->oh * a->ow;
    const int64_t tiles = (npix + OB_P512 - 1) / OB_P512;
    const int64_t blk_bytes = (int64_t)a->kh * a->kw * a->k * OB_TILE_Q * 8;
    int32_t group = blk_bytes * 2 >= OB_GROUP512_BYTES ? 2 : (int32_t)(OB_GROUP512_BYTES / blk_bytes) & ~1;
    if (group > o8) group = o8;
    const int32_t ngroups = (o8 + group - 1) / group;
    const int by_group = a->nthreads > 1 && ngroups >= 4 * a->nthreads;
#pragma omp parallel num_threads(a->nthreads)
    {
        if (by_group) {
#pragma omp for schedule(dynamic, 1)
            for (int32_t gi = 0; gi < ngroups; gi++) {
                const int32_t g0 = gi * group, g1 = (o8 - g0 < group) ? o8 : g0 + group;
                for (int64_t it = 0; it < tiles; it++) ob_avx512_tile(a, g0, g1, npix, it);
            }
        } else {
            for (int32_t g0 = 0; g0 < o8; g0 += group) {
                const int32_t g1 = (o8 - g0 < group) ? o8 : g0 + group;
#pragma omp for schedule(static)
                for (int64_t it = 0; it < tiles; it++) ob_avx512_tile(a, g0, g1, npix, it);
            }
        }
    }
}
#endif

/* The preconditions of ob_conv (see ob_conv_args): OB_OK or OB_EINVAL with the violated one recorded under the
 * entry point name fn (ob_conv, or an entry point that runs convolutions, chain.c). */
int ob_conv_check(const ob_conv_args *a, const char *fn) {
    /* geometry */
    OB_REQUIRE(fn, a->n >= 0 && a->h >= 1 && a->w >= 1);
    OB_REQUIRE(fn, a->c >= 1 && a->c <= OB_MAX_CHANNELS && a->k == OB_WORDS(a->c));
    OB_REQUIRE(fn, a->o >= 1 && a->o <= OB_MAX_CHANNELS && a->kh >= 1 && a->kw >= 1);
    OB_REQUIRE(fn, a->stride >= 1 && a->pad >= 0);
    OB_REQUIRE(fn, (int64_t)a->kh * a->kw * a->c <= INT32_MAX / 2); /* |dot| fits int32 */
    /* the input buffer [N, Hp, Wp, K] is the unpadded input with its border; every tap read lies inside it */
    OB_REQUIRE(fn, (int64_t)a->hp == (int64_t)a->h + 2 * (int64_t)a->pad);
    OB_REQUIRE(fn, (int64_t)a->wp == (int64_t)a->w + 2 * (int64_t)a->pad);
    OB_REQUIRE(fn, a->hp >= a->kh && a->wp >= a->kw);
    OB_REQUIRE(fn, a->oh == (a->hp - a->kh) / a->stride + 1 && a->ow == (a->wp - a->kw) / a->stride + 1);
    OB_REQUIRE(fn, (double)a->n * a->hp * a->wp * a->k < OB_MAX_ELEMS);
    OB_REQUIRE(fn, (double)a->n * a->oh * a->ow * a->o < OB_MAX_ELEMS);
    OB_REQUIRE(fn, a->wq != NULL && (a->n == 0 || a->x != NULL));
    /* epilogue */
    OB_REQUIRE(fn, (a->out_f == NULL && a->out_bits == NULL) || a->scale != NULL);
    OB_REQUIRE(fn, a->res == NULL || (a->res_c >= 1 && a->res_c <= a->o));
    /* the packed output [N, OH + 2 bph, OW + 2 bpw, bk] holds the o bits of a pixel */
    OB_REQUIRE(fn, a->out_bits == NULL || (a->bph >= 0 && a->bpw >= 0 && a->bk >= OB_WORDS(a->o)));
    OB_REQUIRE(fn, a->out_bits == NULL ||
                       (double)a->n * ((double)a->oh + 2.0 * a->bph) * ((double)a->ow + 2.0 * a->bpw) * a->bk <
                           OB_MAX_ELEMS);
    return OB_OK;
}

/* Run the kernel of `isa` (or the next lower one that can run); returns the ISA that ran. */
static int ob_conv_isa(const ob_conv_args *a, int isa) {
#if OB_X86 && defined(__GNUC__)
    if (isa == OB_ISA_AVX512) {
        ob_conv_avx512(a);
        return isa;
    }
    if (isa == OB_ISA_AVX2 && ob_conv_avx2(a)) return isa;
    if (isa >= OB_ISA_POPCNT) {
        ob_conv_popcnt(a);
        return OB_ISA_POPCNT;
    }
#endif
    ob_conv_portable(a);
    return OB_ISA_PORTABLE;
}

/* Binary convolution with the fused epilogue; returns the ISA used (>= 0), or OB_EINVAL for bad arguments (nothing
 * touched). A thread count below 1 runs on one thread; a batch of 0 computes nothing. */
int ob_conv(const ob_conv_args *args) {
    if (args == NULL) return ob_fail("ob_conv", "precondition `args != NULL` violated");
    const int rc = ob_conv_check(args, "ob_conv");
    if (rc != OB_OK) return rc;
    ob_conv_args s = *args;
    if (s.nthreads < 1) s.nthreads = 1;
    s.ctab = s.crow = s.ccol = NULL;
    s.cnc = 0;
    const int isa = ob_isa();
    if (s.n == 0) return isa;
    void *table = s.corr ? ob_border_table(&s) : NULL;
    const int ran = ob_conv_isa(&s, isa);
    free(table);
    return ran;
}
