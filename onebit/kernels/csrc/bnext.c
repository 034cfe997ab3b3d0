/* The float passes of a BNext processor around its binary convolutions: gate + residual (with the fused packing of
 * the next conv's input), the mean of the lambda-mix, the ELM-Attention residual inputs and the SE gate; each in a
 * portable, an AVX2 and an AVX-512 build of the same loop, chosen at run time. */
#include "bitconv.h"

/* ------------------------------------------------------------------------------------------------ gate + residual */
/* The float tail of a BNext processor once its binary branch z is known (z, r: NHWC float32 [N, H, W, C]):
 *   out[b, y, x, ch] = a[b, ch] * z  (* r when mul_r: ELM-Attention)  + hb[ch] + r
 * with a = BN2 gain x SE gate per image and channel, hb = BN2 shift, r the residual. Separate multiplies and adds in
 * this order (the torch fallback in onebit/kernels/engine.py does the same operations: bitwise-equal results).
 * out rows have ldo >= c floats (ldo > c writes one part of a channel concatenation in place). When bits != NULL,
 * also the next binary conv's packed input: bits of out + thresh >= 0 into words [bword0, bword0 + ceil(c / 64)) of
 * each pixel of the zero-initialised uint64 [N, H + 2 bpad, W + 2 bpad, bk] (the rule of ob_pack_nhwc). */
#define OB_GATE_BODY(PACK)                                                                                          \
    const int32_t nw = (c + 63) / 64, wp = w + 2 * bpad, hp = h + 2 * bpad;                                         \
    _Pragma("omp parallel for schedule(static) num_threads(nthreads)") for (int64_t row = 0; row < (int64_t)n * h;  \
                                                                            row++) {                                \
        const int64_t b = row / h, y = row % h; /* one division per image row, none per pixel */                    \
        const float *ai = a + b * c;                                                                                \
        for (int32_t xx = 0; xx < w; xx++) {                                                                        \
            const int64_t i = row * w + xx;                                                                         \
            const float *zi = z + i * c, *ri = r + i * c;                                                           \
            float *oi = out + i * ldo;                                                                              \
            if (mul_r) {                                                                                            \
                for (int32_t ch = 0; ch < c; ch++) {                                                                \
                    float v = ai[ch] * zi[ch];                                                                      \
                    v = v * ri[ch];                                                                                 \
                    v = v + hb[ch];                                                                                 \
                    oi[ch] = v + ri[ch];                                                                            \
                }                                                                                                   \
            } else {                                                                                                \
                for (int32_t ch = 0; ch < c; ch++) {                                                                \
                    float v = ai[ch] * zi[ch];                                                                      \
                    v = v + hb[ch];                                                                                 \
                    oi[ch] = v + ri[ch];                                                                            \
                }                                                                                                   \
            }                                                                                                       \
            if (bits) {                                                                                             \
                uint64_t *dst = bits + (((b * hp) + y + bpad) * wp + xx + bpad) * (int64_t)bk + bword0;             \
                for (int32_t j = 0; j < nw; j++)                                                                    \
                    dst[j] = PACK(oi, thresh, j * 64, (j * 64 + 64 < c) ? j * 64 + 64 : c);                         \
            }                                                                                                       \
        }                                                                                                           \
    }

static void ob_gate_residual_base(const float *restrict z, const float *restrict r, int32_t n, int32_t h, int32_t w,
                                  int32_t c, const float *restrict a, const float *restrict hb, int32_t mul_r,
                                  float *restrict out, int32_t ldo, const float *restrict thresh,
                                  uint64_t *restrict bits, int32_t bpad, int32_t bk, int32_t bword0,
                                  int32_t nthreads) {
    OB_GATE_BODY(ob_pack_word)
}

#if OB_X86 && defined(__GNUC__)
/* the same loop compiled for AVX2 (8 floats per instruction; no FMA contraction: -ffp-contract=off) */
__attribute__((target("avx2"))) static void ob_gate_residual_avx2(
    const float *restrict z, const float *restrict r, int32_t n, int32_t h, int32_t w, int32_t c,
    const float *restrict a, const float *restrict hb, int32_t mul_r, float *restrict out, int32_t ldo,
    const float *restrict thresh, uint64_t *restrict bits, int32_t bpad, int32_t bk, int32_t bword0,
    int32_t nthreads) {
    OB_GATE_BODY(ob_pack_word_avx2)
}

__attribute__((target("avx512f"))) static void ob_gate_residual_avx512(
    const float *restrict z, const float *restrict r, int32_t n, int32_t h, int32_t w, int32_t c,
    const float *restrict a, const float *restrict hb, int32_t mul_r, float *restrict out, int32_t ldo,
    const float *restrict thresh, uint64_t *restrict bits, int32_t bpad, int32_t bk, int32_t bword0,
    int32_t nthreads) {
    OB_GATE_BODY(ob_pack_word_avx512)
}
#endif

/* Returns OB_OK or OB_EINVAL (z, r: [N, H, W, C]; a: [N, C]; hb, thresh: [C]; out: rows of ldo >= C floats). */
int ob_gate_residual(const float *z, const float *r, int32_t n, int32_t h, int32_t w, int32_t c, const float *a,
                     const float *hb, int32_t mul_r, float *out, int32_t ldo, const float *thresh, uint64_t *bits,
                     int32_t bpad, int32_t bk, int32_t bword0, int32_t nthreads) {
    static const char fn[] = "ob_gate_residual";
    OB_REQUIRE(fn, n >= 0 && h >= 0 && w >= 0 && c >= 1 && c <= OB_MAX_CHANNELS && ldo >= c);
    OB_REQUIRE(fn, (double)n * h * w * ldo < OB_MAX_ELEMS);
    /* the packed output [N, H + 2 bpad, W + 2 bpad, bk] holds words [bword0, bword0 + ceil(c / 64)) of a pixel */
    OB_REQUIRE(fn, bits == NULL || (bpad >= 0 && bword0 >= 0 && (int64_t)bword0 + OB_WORDS(c) <= bk));
    OB_REQUIRE(fn, bits == NULL || (double)n * ((double)h + 2.0 * bpad) * ((double)w + 2.0 * bpad) * bk < OB_MAX_ELEMS);
    if ((int64_t)n * h * w == 0) return OB_OK;
    OB_REQUIRE(fn, z != NULL && r != NULL && a != NULL && hb != NULL && out != NULL);
    if (nthreads < 1) nthreads = 1;
#if OB_X86 && defined(__GNUC__)
    if (ob_isa() >= OB_ISA_AVX512) {
        ob_gate_residual_avx512(z, r, n, h, w, c, a, hb, mul_r, out, ldo, thresh, bits, bpad, bk, bword0, nthreads);
        return OB_OK;
    }
    if (ob_use_avx2()) {
        ob_gate_residual_avx2(z, r, n, h, w, c, a, hb, mul_r, out, ldo, thresh, bits, bpad, bk, bword0, nthreads);
        return OB_OK;
    }
#endif
    ob_gate_residual_base(z, r, n, h, w, c, a, hb, mul_r, out, ldo, thresh, bits, bpad, bk, bword0, nthreads);
    return OB_OK;
}

/* out[b, ch] = lam[ch] * mean_p ref[b, p, ch] + oml[ch] * mean_p z[b, p, ch] (ref, z NHWC float32 [N, HW, C]): the
 * global average pool of the λ-mix of a BNext processor, without forming the mix. Each thread sums a contiguous range
 * of pixel rows: blocks of up to OB_MIX_BLOCK rows in float (fr, fz: its own 2C floats), each block added into double
 * totals (part: its own 2NC doubles); the totals of the threads are added in thread order. Returns OB_OK, OB_EINVAL
 * or OB_ENOMEM (the buffers cannot be allocated). */
#define OB_MIX_BLOCK 16
#define OB_MIX_FLUSH                                                                                                \
    if (cur >= 0) {                                                                                                 \
        double *sr = part + cur * 2 * (int64_t)c, *sz = sr + c;                                                     \
        for (int32_t j = 0; j < c; j++) {                                                                           \
            sr[j] += (double)fr[j];                                                                                 \
            sz[j] += (double)fz[j];                                                                                 \
            fr[j] = fz[j] = 0.0f;                                                                                   \
        }                                                                                                           \
    }
#define OB_MIX_ROWS                                                                                         \
    int64_t cur = -1;                                                                                               \
    for (int32_t j = 0; j < c; j++) fr[j] = fz[j] = 0.0f;                                                           \
    for (int64_t i0 = r0; i0 < r1;) {                                                                               \
        /* a block: up to OB_MIX_BLOCK rows of one image (one division per block) */                                \
        const int64_t b = i0 / hw, end = (b + 1) * hw < r1 ? (b + 1) * hw : r1;                                     \
        const int64_t i1 = end - i0 < OB_MIX_BLOCK ? end : i0 + OB_MIX_BLOCK;                                       \
        OB_MIX_FLUSH                                                                                                \
        cur = b;                                                                                                    \
        for (int64_t i = i0; i < i1; i++) {                                                                         \
            const float *rp = ref + i * c, *zp = z + i * c;                                                         \
            for (int32_t j = 0; j < c; j++) {                                                                       \
                fr[j] += rp[j];                                                                                     \
                fz[j] += zp[j];                                                                                     \
            }                                                                                                       \
        }                                                                                                           \
        i0 = i1;                                                                                                    \
    }                                                                                                               \
    OB_MIX_FLUSH

static void ob_mix_rows_base(const float *restrict ref, const float *restrict z, int32_t hw, int32_t c,
                             double *restrict part, float *restrict fr, float *restrict fz, int64_t r0, int64_t r1) {
    OB_MIX_ROWS
}

#if OB_X86 && defined(__GNUC__)
__attribute__((target("avx512f"))) static void ob_mix_rows_avx512(const float *restrict ref, const float *restrict z,
                                                                 int32_t hw, int32_t c, double *restrict part,
                                                                 float *restrict fr, float *restrict fz, int64_t r0,
                                                                 int64_t r1) {
    OB_MIX_ROWS
}

__attribute__((target("avx2"))) static void ob_mix_rows_avx2(const float *restrict ref, const float *restrict z,
                                                             int32_t hw, int32_t c, double *restrict part,
                                                             float *restrict fr, float *restrict fz, int64_t r0,
                                                             int64_t r1) {
    OB_MIX_ROWS
}
#endif

int ob_mix_mean(const float *ref, const float *z, int32_t n, int32_t hw, int32_t c, const float *lam, const float *oml,
                float *out, int32_t nthreads) {
    static const char fn[] = "ob_mix_mean";
    OB_REQUIRE(fn, n >= 0 && hw >= 0 && c >= 1 && c <= OB_MAX_CHANNELS);
    OB_REQUIRE(fn, (double)n * hw * c < OB_MAX_ELEMS);
    if (n == 0) return OB_OK;
    OB_REQUIRE(fn, hw >= 1); /* the mean over no pixels */
    OB_REQUIRE(fn, ref != NULL && z != NULL && lam != NULL && oml != NULL && out != NULL);
    const int64_t rows = (int64_t)n * hw, per = 2 * (int64_t)n * c;
    if (nthreads < 1) nthreads = 1;
    if (nthreads > rows) nthreads = rows > 0 ? (int32_t)rows : 1;
    /* each thread's buffers on cache lines of their own (64-byte aligned, strides rounded up to 64 bytes): a line
     * shared by two threads that both update it every row costs more than the second thread saves */
    const int64_t pstride = (per + 7) / 8 * 8, fstride = (2 * (int64_t)c + 15) / 16 * 16;
    double *part = (double *)aligned_alloc(64, (size_t)(pstride * nthreads) * sizeof(double));
    float *fbuf = (float *)aligned_alloc(64, (size_t)(fstride * nthreads) * sizeof(float));
    if (!part || !fbuf) {
        free(part);
        free(fbuf);
        return ob_nomem(fn);
    }
    memset(part, 0, (size_t)(pstride * nthreads) * sizeof(double));
    const int vec = ob_use_avx2(), vec512 = ob_isa() >= OB_ISA_AVX512;
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int32_t t = 0; t < nthreads; t++) {
        const int64_t r0 = rows * t / nthreads, r1 = rows * (t + 1) / nthreads;
        double *pt = part + t * pstride;
        float *fr = fbuf + t * fstride, *fz = fr + c;
#if OB_X86 && defined(__GNUC__)
        if (vec512) {
            ob_mix_rows_avx512(ref, z, hw, c, pt, fr, fz, r0, r1);
            continue;
        }
        if (vec) {
            ob_mix_rows_avx2(ref, z, hw, c, pt, fr, fz, r0, r1);
            continue;
        }
#endif
        ob_mix_rows_base(ref, z, hw, c, pt, fr, fz, r0, r1);
    }
    for (int32_t t = 1; t < nthreads; t++)
        for (int64_t k = 0; k < per; k++) part[k] += part[t * pstride + k];
    for (int64_t b = 0; b < n; b++) {
        const double *sr = part + b * 2 * (int64_t)c, *sz = sr + c;
        for (int32_t j = 0; j < c; j++)
            out[b * c + j] = lam[j] * (float)(sr[j] / hw) + oml[j] * (float)(sz[j] / hw);
    }
    free(part);
    free(fbuf);
    return OB_OK;
}

/* ------------------------------------------------------------------------------------------------ residual */
/* The residual inputs of an ELM-Attention processor from its input x (NHWC float32 [N, H, W, C]) in one read:
 * stride 1: r = PReLU(x);  stride 2: px = avgpool2x2(x) (NULL: not wanted) and r = avgpool2x2(PReLU(x)), outputs
 * [N, H/2, W/2, C] (floor, as avg_pool2d). PReLU(v) = v > 0 ? v : slope * v; a window averages as
 * ((v00 + v01) + v10) + v11 then / 4, in float. slope: [C]. */
#define OB_PRELU(v, s) ((v) > 0.0f ? (v) : (s) * (v))
#define OB_RESIDUAL_BODY                                                                                            \
    if (stride == 1) {                                                                                              \
        _Pragma("omp parallel for schedule(static) num_threads(nthreads)") for (int64_t i = 0; i < (int64_t)n * h * w; \
                                                                                i++) {                              \
            const float *xi = x + i * c;                                                                            \
            float *ri = r + i * c;                                                                                  \
            for (int32_t ch = 0; ch < c; ch++) ri[ch] = OB_PRELU(xi[ch], slope[ch]);                                \
        }                                                                                                           \
        return;                                                                                                     \
    }                                                                                                               \
    const int32_t oh = h / 2, ow = w / 2;                                                                           \
    _Pragma("omp parallel for schedule(static) num_threads(nthreads)") for (int64_t row = 0; row < (int64_t)n * oh; \
                                                                            row++) {                                \
        const int64_t b = row / oh, y = row % oh;                                                                   \
        for (int32_t xx = 0; xx < ow; xx++) {                                                                       \
            const float *p00 = x + (((b * h) + 2 * y) * w + 2 * xx) * (int64_t)c, *p01 = p00 + c;                   \
            const float *p10 = p00 + (int64_t)w * c, *p11 = p10 + c;                                                \
            const int64_t o = (row * ow + xx) * (int64_t)c;                                                         \
            if (px)                                                                                                 \
                for (int32_t ch = 0; ch < c; ch++) px[o + ch] = (((p00[ch] + p01[ch]) + p10[ch]) + p11[ch]) / 4.0f;  \
            for (int32_t ch = 0; ch < c; ch++) {                                                                    \
                const float s = slope[ch];                                                                          \
                r[o + ch] = (((OB_PRELU(p00[ch], s) + OB_PRELU(p01[ch], s)) + OB_PRELU(p10[ch], s)) +               \
                             OB_PRELU(p11[ch], s)) / 4.0f;                                                          \
            }                                                                                                       \
        }                                                                                                           \
    }

static void ob_elm_residual_base(const float *restrict x, int32_t n, int32_t h, int32_t w, int32_t c,
                                 const float *restrict slope, int32_t stride, float *restrict px, float *restrict r,
                                 int32_t nthreads) {
    OB_RESIDUAL_BODY
}

#if OB_X86 && defined(__GNUC__)
__attribute__((target("avx2"))) static void ob_elm_residual_avx2(const float *restrict x, int32_t n, int32_t h,
                                                                int32_t w, int32_t c, const float *restrict slope,
                                                                int32_t stride, float *restrict px,
                                                                float *restrict r, int32_t nthreads) {
    OB_RESIDUAL_BODY
}

__attribute__((target("avx512f"))) static void ob_elm_residual_avx512(const float *restrict x, int32_t n, int32_t h,
                                                                     int32_t w, int32_t c,
                                                                     const float *restrict slope, int32_t stride,
                                                                     float *restrict px, float *restrict r,
                                                                     int32_t nthreads) {
    OB_RESIDUAL_BODY
}
#endif

/* Returns OB_OK or OB_EINVAL (x: [N, H, W, C]; r, px: [N, H, W, C] at stride 1, [N, H/2, W/2, C] at stride 2). */
int ob_elm_residual(const float *x, int32_t n, int32_t h, int32_t w, int32_t c, const float *slope, int32_t stride,
                    float *px, float *r, int32_t nthreads) {
    static const char fn[] = "ob_elm_residual";
    OB_REQUIRE(fn, n >= 0 && h >= 0 && w >= 0 && c >= 1 && c <= OB_MAX_CHANNELS && (stride == 1 || stride == 2));
    OB_REQUIRE(fn, (double)n * h * w * c < OB_MAX_ELEMS);
    if ((int64_t)n * (h / stride) * (w / stride) == 0) return OB_OK; /* no output pixel */
    OB_REQUIRE(fn, x != NULL && slope != NULL && r != NULL);
    if (nthreads < 1) nthreads = 1;
#if OB_X86 && defined(__GNUC__)
    if (ob_isa() >= OB_ISA_AVX512) {
        ob_elm_residual_avx512(x, n, h, w, c, slope, stride, px, r, nthreads);
        return OB_OK;
    }
    if (ob_use_avx2()) {
        ob_elm_residual_avx2(x, n, h, w, c, slope, stride, px, r, nthreads);
        return OB_OK;
    }
#endif
    ob_elm_residual_base(x, n, h, w, c, slope, stride, px, r, nthreads);
    return OB_OK;
}

/* ------------------------------------------------------------------------------------------------ SE gate */
/* The squeeze-and-excitation gate of a BNext processor on its pooled input p [N, C], with BN2's gain g folded:
 *   a[b, j] = g[j] * sigmoid(b2[j] + sum_i w2[j, i] * relu(b1[i] + sum_k w1[i, k] p[b, k]))
 * w1 [HD, C] and w2 [C, HD] row-major float32 (the 1x1 convs' weights). At batch 1 this is two matrix-vector
 * products that read ~C*HD*8 bytes of weights: one pass, each row's dot product vectorised (float partial sums,
 * so results differ from torch's addmm by float rounding), rows shared by the threads when there are enough.
 * hidden: caller's scratch of N*HD floats. */
#define OB_SE_BODY                                                                                                  \
    const int par = nthreads > 1 && (int64_t)c * hd >= 32768;                                                      \
    _Pragma("omp parallel num_threads(par ? nthreads : 1)") {                                                       \
        _Pragma("omp for schedule(static)") for (int64_t r = 0; r < (int64_t)n * hd; r++) {                        \
            const int64_t b = r / hd, i = r % hd;                                                                   \
            const float *wr = w1 + i * c, *pb = p + b * c;                                                          \
            float s = 0.0f;                                                                                         \
            _Pragma("omp simd reduction(+ : s)") for (int32_t k = 0; k < c; k++) s += wr[k] * pb[k];                \
            s = s + b1[i];                                                                                          \
            hidden[r] = s < 0.0f ? 0.0f : s; /* ReLU that keeps NaN, as torch's */                             \
        }                                                                                                           \
        _Pragma("omp for schedule(static)") for (int64_t r = 0; r < (int64_t)n * c; r++) {                         \
            const int64_t b = r / c, j = r % c;                                                                     \
            const float *wr = w2 + j * hd, *hb = hidden + b * hd;                                                   \
            float s = 0.0f;                                                                                         \
            _Pragma("omp simd reduction(+ : s)") for (int32_t k = 0; k < hd; k++) s += wr[k] * hb[k];               \
            s = s + b2[j];                                                                                          \
            a[r] = (1.0f / (1.0f + expf(-s))) * g[j];                                                               \
        }                                                                                                           \
    }

static void ob_se_gate_base(const float *restrict p, int32_t n, int32_t c, int32_t hd, const float *restrict w1,
                            const float *restrict b1, const float *restrict w2, const float *restrict b2,
                            const float *restrict g, float *restrict a, float *restrict hidden, int32_t nthreads) {
    OB_SE_BODY
}

#if OB_X86 && defined(__GNUC__)
__attribute__((target("avx2"))) static void ob_se_gate_avx2(const float *restrict p, int32_t n, int32_t c, int32_t hd,
                                                            const float *restrict w1, const float *restrict b1,
                                                            const float *restrict w2, const float *restrict b2,
                                                            const float *restrict g, float *restrict a,
                                                            float *restrict hidden, int32_t nthreads) {
    OB_SE_BODY
}

__attribute__((target("avx512f"))) static void ob_se_gate_avx512(const float *restrict p, int32_t n, int32_t c,
                                                                 int32_t hd, const float *restrict w1,
                                                                 const float *restrict b1, const float *restrict w2,
                                                                 const float *restrict b2, const float *restrict g,
                                                                 float *restrict a, float *restrict hidden,
                                                                 int32_t nthreads) {
    OB_SE_BODY
}
#endif

/* Returns OB_OK or OB_EINVAL (p, a: [N, C]; w1: [HD, C]; b1: [HD]; w2: [C, HD]; b2, g: [C]; hidden: [N, HD]). */
int ob_se_gate(const float *p, int32_t n, int32_t c, int32_t hd, const float *w1, const float *b1, const float *w2,
               const float *b2, const float *g, float *a, float *hidden, int32_t nthreads) {
    static const char fn[] = "ob_se_gate";
    OB_REQUIRE(fn, n >= 0 && c >= 1 && c <= OB_MAX_CHANNELS && hd >= 1 && hd <= OB_MAX_CHANNELS);
    OB_REQUIRE(fn, (double)n * c * hd < OB_MAX_ELEMS && (double)c * hd < OB_MAX_ELEMS);
    if (n == 0) return OB_OK;
    OB_REQUIRE(fn, p != NULL && w1 != NULL && b1 != NULL && w2 != NULL && b2 != NULL && g != NULL);
    OB_REQUIRE(fn, a != NULL && hidden != NULL);
    if (nthreads < 1) nthreads = 1;
#if OB_X86 && defined(__GNUC__)
    if (ob_isa() >= OB_ISA_AVX512) {
        ob_se_gate_avx512(p, n, c, hd, w1, b1, w2, b2, g, a, hidden, nthreads);
        return OB_OK;
    }
    if (ob_use_avx2()) {
        ob_se_gate_avx2(p, n, c, hd, w1, b1, w2, b2, g, a, hidden, nthreads);
        return OB_OK;
    }
#endif
    ob_se_gate_base(p, n, c, hd, w1, b1, w2, b2, g, a, hidden, nthreads);
    return OB_OK;
}
