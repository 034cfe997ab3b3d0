/* A BNext processor (onebit/kernels/fuse.py FusedBNextProcessor, onebit/kernels/bnext_chain.py) in one call: the
 * residual pass (ob_elm_residual: ELM-Attention's PReLU_a, the 2x2 pool at stride 2), the sign+pack of the input
 * (unless the previous processor handed the bits over), the binary conv with its epilogue (BN1, PReLU_b) giving Z,
 * the pooled lambda-mix (ob_mix_mean), the linear SE gate with BN2's gain (ob_se_gate) and the gate + residual tail
 * (ob_gate_residual) into the caller's output at a channel offset, optionally with the packed input of the next
 * processor. The same functions as the separate calls of the multi-call path, in the same order, with the same
 * thread count: bitwise the same results. The intermediates (packed input, R and the pooled input, Z, the pooled mix,
 * the gate and the SE hidden layer) live in temporary buffers of this call. */
#include "bitconv.h"

/* bytes rounded up to whole 64-byte lines (each temporary starts on a line) */
static int64_t ob_bnext_line(int64_t bytes) { return (bytes + 63) / 64 * 64; }

/* A non-NULL stand-in for the temporary buffers while the conv's arguments are validated (never dereferenced). */
static uint64_t ob_bnext_placeholder;

/* The preconditions of ob_bnext_processor for the conv arguments a (x and out_f set to stand-ins by the caller) and
 * the processor arguments p; nothing is dereferenced but a and p. */
static int ob_bnext_check(const ob_conv_args *a, const ob_bnext_args *p, const float *r, const float *ref, int32_t ldo,
                          int32_t offset, const uint64_t *bits, const char *fn) {
    const int rc = ob_conv_check(a, fn);
    if (rc != OB_OK) return rc;
    const int32_t h = a->h, w = a->w, cin = a->c, c = a->o, oh = a->oh, ow = a->ow;
    OB_REQUIRE(fn, p->elm == 0 || p->elm == 1);
    OB_REQUIRE(fn, p->recouple == 0 || p->recouple == 1);
    OB_REQUIRE(fn, p->mix_residual == 0 || p->mix_residual == 1);
    OB_REQUIRE(fn, p->residual >= 0 && p->residual <= 2);
    OB_REQUIRE(fn, a->stride == 1 || a->stride == 2);
    /* R [N, OH, OW, C] pixel for pixel with Z: formed from x only where its geometry gives exactly that */
    OB_REQUIRE(fn, p->residual == 2 || cin == c);
    OB_REQUIRE(fn, p->residual != 0 || (a->stride == 1 && oh == h && ow == w));
    OB_REQUIRE(fn, p->residual != 1 || (a->stride == 1 ? (oh == h && ow == w) : (oh == h / 2 && ow == w / 2)));
    OB_REQUIRE(fn, p->residual != 1 || p->slope != NULL);
    OB_REQUIRE(fn, (int64_t)oh * ow <= INT32_MAX); /* the pixels of one image for the mix mean */
    OB_REQUIRE(fn, p->g2 != NULL && p->h2 != NULL);
    if (p->recouple) {
        OB_REQUIRE(fn, p->hd >= 1 && p->hd <= OB_MAX_CHANNELS);
        OB_REQUIRE(fn, (double)a->n * c * p->hd < OB_MAX_ELEMS && (double)c * p->hd < OB_MAX_ELEMS);
        OB_REQUIRE(fn, p->lam != NULL && p->oml != NULL);
        OB_REQUIRE(fn, p->w1 != NULL && p->b1 != NULL && p->w2 != NULL && p->b2 != NULL);
    }
    /* the output: rows of ldo floats, this processor's C channels at offset */
    OB_REQUIRE(fn, offset >= 0 && ldo >= 1 && (int64_t)offset + c <= ldo);
    OB_REQUIRE(fn, (double)a->n * oh * ow * ldo < OB_MAX_ELEMS);
    /* the emitted bits [N, OH + 2 bpad, OW + 2 bpad, ceil(C / 64)] */
    OB_REQUIRE(fn, bits == NULL || (p->thresh != NULL && p->bpad >= 0));
    OB_REQUIRE(fn, bits == NULL ||
                       (double)a->n * ((double)oh + 2.0 * p->bpad) * ((double)ow + 2.0 * p->bpad) * OB_WORDS(c) <
                           OB_MAX_ELEMS);
    /* the caller's residual and mix reference [N, OH, OW, C] where it gives them (residual 2) */
    OB_REQUIRE(fn, a->n == 0 || p->residual != 2 || r != NULL);
    OB_REQUIRE(fn, a->n == 0 || p->residual != 2 || !p->recouple || p->mix_residual || ref != NULL);
    return OB_OK;
}

/* One BNext processor. conv: the arguments of its binary conv with every call-invariant field set (geometry, batch,
 * weights, padding correction, epilogue vectors: BN1 and PReLU_b); its x, res, out_f, out_int, out_bits and
 * nthreads are ignored (set here: no residual or packed output in the conv). p: the processor's other invariants.
 * x: the input, float NHWC [N, H, W, Cin]; xp: its packed bits [N, H + 2 pad, W + 2 pad, K] (zero border) or NULL
 * to pack x + p->shift here. r, ref: with p->residual == 2 the residual R and (recoupling, mix with the input) the
 * mix reference, float NHWC [N, OH, OW, C]; else ignored. out: float NHWC rows of ldo floats, [N, OH, OW, ldo], of
 * which channels [offset, offset + C) are written. bits: NULL or [N, OH + 2 bpad, OW + 2 bpad, ceil(C / 64)] words,
 * the next processor's packed input sign(out + thresh) (written whole, border zeroed here). Returns OB_OK,
 * OB_EINVAL (nothing touched) or OB_ENOMEM (no output written). */
int ob_bnext_processor(const ob_conv_args *conv, const ob_bnext_args *p, const float *x, const uint64_t *xp,
                       const float *r, const float *ref, float *out, int32_t ldo, int32_t offset, uint64_t *bits,
                       int32_t nthreads) {
    static const char fn[] = "ob_bnext_processor";
    OB_REQUIRE(fn, conv != NULL && p != NULL);
    if (nthreads < 1) nthreads = 1;
    ob_conv_args a = *conv;
    const uint64_t *ph = &ob_bnext_placeholder;
    a.x = xp ? xp : ph;
    a.res = NULL;
    a.res_c = 0;
    a.out_int = NULL;
    a.out_f = (float *)ph;
    a.out_bits = NULL;
    a.bph = a.bpw = 0;
    a.nthreads = nthreads;
    int rc = ob_bnext_check(&a, p, r, ref, ldo, offset, bits, fn);
    if (rc != OB_OK) return rc;
    const int32_t n = a.n, h = a.h, w = a.w, cin = a.c, c = a.o, oh = a.oh, ow = a.ow, stride = a.stride;
    if (n == 0) return OB_OK;
    OB_REQUIRE(fn, x != NULL && out != NULL);
    /* temporaries: packed input (zeroed: its border), R and the pooled input (residual 1), Z, then the pooled mix
     * m [N, C], the gate a [N, C] and the SE hidden layer [N, HD] in one block */
    const int64_t npix = (int64_t)n * oh * ow;
    const int want_px = p->residual == 1 && stride == 2 && p->recouple && !p->mix_residual;
    const int64_t hd = p->recouple ? p->hd : 0;
    /* sizes the int64 byte counts below cannot hold are sizes no allocation can give */
    const double need = (xp ? 0.0 : (double)n * a.hp * a.wp * a.k * 8) + (double)npix * (2.0 * cin + c) * 4 +
                        ((double)n * c * 2 + (double)n * hd) * 4;
    if (need > 1e18) return ob_nomem(fn);
    int64_t bytes[4];
    bytes[0] = xp ? 0 : ob_bnext_line((int64_t)n * a.hp * a.wp * a.k * 8);
    bytes[1] = p->residual == 1 ? ob_bnext_line((want_px ? 2 : 1) * npix * cin * 4) : 0;
    bytes[2] = ob_bnext_line(npix * c * 4);
    bytes[3] = ob_bnext_line((2 * (int64_t)n * c + n * hd) * 4);
    void *owned[4] = {NULL, NULL, NULL, NULL};
    uint64_t *xs = xp ? NULL : (uint64_t *)(owned[0] = calloc((size_t)bytes[0], 1));
    float *rbuf = p->residual == 1 ? (float *)(owned[1] = malloc((size_t)bytes[1])) : NULL;
    float *z = (float *)(owned[2] = malloc((size_t)bytes[2]));
    float *scratch = (float *)(owned[3] = malloc((size_t)bytes[3]));
    if ((!xp && !xs) || (p->residual == 1 && !rbuf) || !z || !scratch) {
        rc = ob_nomem(fn);
        goto done;
    }
    float *m = scratch, *gate = scratch + (int64_t)n * c, *hidden = gate + (int64_t)n * c;
    /* R, and the mix reference of a recoupling processor that mixes the (pooled) input */
    const float *res = x, *mref = x;
    if (p->residual == 1) {
        float *px = want_px ? rbuf + npix * cin : NULL;
        rc = ob_elm_residual(x, n, h, w, cin, p->slope, stride, px, rbuf, nthreads);
        if (rc != OB_OK) goto done;
        res = rbuf;
        if (want_px) mref = px;
    } else if (p->residual == 2) {
        res = r;
        mref = ref;
    }
    if (p->mix_residual) mref = res;
    /* Z = PReLU_b(BN1(sign(x + shift) conv W)), NHWC [N, OH, OW, C] */
    if (!xp) {
        rc = ob_pack_nhwc(x, p->shift, n, h, w, cin, a.pad, a.pad, a.k, xs, nthreads);
        if (rc != OB_OK) goto done;
        a.x = xs;
    }
    a.out_f = z;
    rc = ob_conv(&a);
    if (rc < 0) goto done;
    /* the gate: g2 * sigmoid(SE(lam mean(ref) + (1 - lam) mean(Z))), or g2 without recoupling */
    if (p->recouple) {
        rc = ob_mix_mean(mref, z, n, oh * ow, c, p->lam, p->oml, m, nthreads);
        if (rc == OB_OK)
            rc = ob_se_gate(m, n, c, p->hd, p->w1, p->b1, p->w2, p->b2, p->g2, gate, hidden, nthreads);
        if (rc != OB_OK) goto done;
    } else {
        for (int64_t b = 0; b < n; b++) memcpy(gate + b * c, p->g2, (size_t)c * sizeof(float));
    }
    /* the tail into out (and the next processor's bits, border zeroed) */
    const int32_t bk = (int32_t)OB_WORDS(c);
    if (bits) {
        const int64_t words = (int64_t)n * (oh + 2 * (int64_t)p->bpad) * (ow + 2 * (int64_t)p->bpad) * bk;
        memset(bits, 0, (size_t)words * sizeof(uint64_t));
    }
    rc = ob_gate_residual(z, res, n, oh, ow, c, gate, p->h2, p->elm, out + offset, ldo, bits ? p->thresh : NULL, bits,
                          bits ? p->bpad : 0, bk, 0, nthreads);
done:
    for (int i = 0; i < 4; i++) free(owned[i]);
    return rc;
}
