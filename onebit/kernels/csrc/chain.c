/* A ReActNet-A block (onebit/kernels/fuse.py FusedReActBlock) in one call: the sign+pack of its input (unless the
 * previous block handed the bits over), the 2x2 average pool of the input for a stride-2 residual, the 3x3 conv with
 * its epilogue (BN1, residual, RPReLU, the sign+pack of O1) and the 1x1 conv with its epilogue (BN2, O1, RPReLU and
 * optionally the sign+pack of the next block's input). The intermediates (packed input, pooled residual, O1 and its
 * bits) live in temporary buffers of this call; the results are those of the separate calls (ob_pack_nhwc, the pool
 * of torch's avg_pool2d, ob_conv twice), bitwise. */
#include "bitconv.h"

/* 2x2 average pool, stride 2, of x [N, H, W, C] into out [N, H/2, W/2, C]: ((v00 + v01) + v10) + v11 then / 4 in
 * float, the order of torch's avg_pool2d (kernel 2, stride 2, no padding) and of ob_elm_residual's pool. */
static void ob_pool2(const float *restrict x, int32_t n, int32_t h, int32_t w, int32_t c, float *restrict out,
                     int32_t nthreads) {
    const int32_t oh = h / 2, ow = w / 2;
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t row = 0; row < (int64_t)n * oh; row++) {
        const int64_t b = row / oh, y = row % oh;
        for (int32_t xx = 0; xx < ow; xx++) {
            const float *p00 = x + (((b * h) + 2 * y) * w + 2 * xx) * (int64_t)c, *p01 = p00 + c;
            const float *p10 = p00 + (int64_t)w * c, *p11 = p10 + c;
            float *o = out + (row * ow + xx) * (int64_t)c;
            for (int32_t ch = 0; ch < c; ch++) o[ch] = (((p00[ch] + p01[ch]) + p10[ch]) + p11[ch]) / 4.0f;
        }
    }
}

/* bytes rounded up to whole 64-byte lines (each temporary starts on a line) */
static int64_t ob_line(int64_t bytes) { return (bytes + 63) / 64 * 64; }

/* The bytes of the temporaries of ob_react_block for these (checked) arguments: packed input, O1's bits, O1, pooled
 * residual. */
static int64_t ob_react_layout(const ob_conv_args *c1, const ob_conv_args *c2, int32_t stride, int64_t part[4]) {
    const int64_t npix = (int64_t)c1->n * c1->oh * c1->ow;
    part[0] = ob_line((int64_t)c1->n * c1->hp * c1->wp * c1->k * 8);
    part[1] = ob_line(npix * c2->k * 8);
    part[2] = ob_line(npix * c1->o * 4);
    part[3] = stride == 2 ? ob_line(npix * c1->c * 4) : 0;
    return part[0] + part[1] + part[2] + part[3];
}

/* A non-NULL stand-in for the temporary buffers while the arguments are validated (never dereferenced). */
static uint64_t ob_placeholder;

/* One ReActNet-A block. c1, c2: the arguments of the 3x3 and the 1x1 conv with every call-invariant field set
 * (geometry, batch, weights, padding correction, epilogue vectors; c2's bph = bpw = the border of the emitted bits,
 * bk their words per pixel); their x, res, res_c, out_f, out_int, out_bits, nthreads (and c1's bph, bpw, bk) are
 * ignored: this function sets them. x: the block input, float NHWC [N, H, W, C] (H, W, C = c1->h, c1->w, c1->c).
 * shift: [C] or NULL, the input shift of the sign+pack; xp: the packed input [N, Hp, Wp, K] of c1 (zero border), or
 * NULL to pack x + shift here. stride: 1 (residual x) or 2 (residual: the 2x2 average pool of x), the stride of c1.
 * out: float NHWC [N, OH, OW, c2->o]; bits: NULL or [N, OH + 2 bph, OW + 2 bpw, bk] words (written whole, border
 * zeroed here). The temporaries (packed input, pooled residual, O1 and its bits) are allocated by the call (buffers
 * kept by the caller across calls measured no faster). Returns OB_OK, OB_EINVAL (nothing touched) or OB_ENOMEM (no
 * output written). */
int ob_react_block(const ob_conv_args *c1, const ob_conv_args *c2, const float *x, const float *shift,
                   const uint64_t *xp, int32_t stride, float *out, uint64_t *bits, int32_t nthreads) {
    static const char fn[] = "ob_react_block";
    OB_REQUIRE(fn, c1 != NULL && c2 != NULL);
    OB_REQUIRE(fn, stride == 1 || stride == 2);
    OB_REQUIRE(fn, c1->stride == stride);
    ob_conv_args a1 = *c1, a2 = *c2;
    const uint64_t *ph = &ob_placeholder;
    /* conv 1: reads xp, the residual (x or its pool, C channels), writes O1 and its bits (no border) */
    a1.x = xp ? xp : ph;
    a1.res = (const float *)ph;
    a1.res_c = c1->c;
    a1.out_f = (float *)ph;
    a1.out_int = NULL;
    a1.out_bits = (uint8_t *)ph;
    a1.bph = a1.bpw = 0;
    a1.bk = c2->k;
    a1.nthreads = nthreads < 1 ? 1 : nthreads;
    /* conv 2: reads O1's bits and O1 (residual), writes out and optionally bits */
    a2.x = ph;
    a2.res = (const float *)ph;
    a2.res_c = c1->o;
    a2.out_f = out;
    a2.out_int = NULL;
    a2.out_bits = (uint8_t *)bits;
    a2.nthreads = a1.nthreads;
    int rc = ob_conv_check(&a1, fn);
    if (rc == OB_OK) rc = ob_conv_check(&a2, fn);
    if (rc != OB_OK) return rc;
    /* the chain: O1 has the input's channels (the residual's), the 1x1 conv reads O1 pixel for pixel */
    OB_REQUIRE(fn, c1->o == c1->c);
    OB_REQUIRE(fn, c2->n == c1->n && c2->h == c1->oh && c2->w == c1->ow && c2->c == c1->o);
    OB_REQUIRE(fn, c2->kh == 1 && c2->kw == 1 && c2->stride == 1 && c2->pad == 0);
    OB_REQUIRE(fn, stride == 1 ? (c1->oh == c1->h && c1->ow == c1->w) : (c1->oh == c1->h / 2 && c1->ow == c1->w / 2));
    const int32_t n = c1->n, h = c1->h, w = c1->w, c = c1->c;
    if (n == 0) return OB_OK;
    OB_REQUIRE(fn, x != NULL && out != NULL);
    /* temporaries (zeroed where they are not written whole: the packed input's border, unused bits of O1's words) */
    int64_t part[4];
    ob_react_layout(c1, c2, stride, part);
    void *owned[4] = {NULL, NULL, NULL, NULL};
    uint64_t *xs = xp ? NULL : (uint64_t *)(owned[0] = calloc((size_t)part[0], 1));
    uint64_t *abits = (uint64_t *)(owned[1] = calloc((size_t)part[1], 1));
    float *o1 = (float *)(owned[2] = malloc((size_t)part[2]));
    float *pool = stride == 2 ? (float *)(owned[3] = malloc((size_t)part[3])) : NULL;
    if ((!xp && !xs) || !abits || !o1 || (stride == 2 && !pool)) {
        rc = ob_nomem(fn);
        goto done;
    }
    if (!xp) {
        rc = ob_pack_nhwc(x, shift, n, h, w, c, c1->pad, c1->pad, c1->k, xs, a1.nthreads);
        if (rc != OB_OK) goto done;
        a1.x = xs;
    }
    if (stride == 2) ob_pool2(x, n, h, w, c, pool, a1.nthreads);
    a1.res = stride == 2 ? pool : x;
    a1.out_f = o1;
    a1.out_bits = (uint8_t *)abits;
    rc = ob_conv(&a1);
    if (rc < 0) goto done;
    if (bits) {
        const int64_t words = (int64_t)n * (c2->oh + 2 * (int64_t)c2->bph) * (c2->ow + 2 * (int64_t)c2->bpw) * c2->bk;
        memset(bits, 0, (size_t)words * sizeof(uint64_t));
    }
    a2.x = abits;
    a2.res = o1;
    rc = ob_conv(&a2);
    if (rc >= 0) rc = OB_OK;
done:
    for (int i = 0; i < 4; i++) free(owned[i]);
    return rc;
}

