/* Sign + pack: float NHWC activations to the packed bit layout of bitconv.h (ob_pack_nhwc); the per-word helpers
 * (ob_pack_word and its AVX2/AVX-512 variants) are in bitconv.h, shared with the fused packing of bnext.c. */
#include "bitconv.h"

/* ------------------------------------------------------------------------------------------------ sign + pack */
/* bits of !(x + t < 0) for x float [N, H, W, C] (NHWC contiguous) into zero-initialised out [N, H+2ph, W+2pw, K]
 * (K = ceil(C / 64)); t: [C] or NULL. Returns OB_OK or OB_EINVAL. */
int ob_pack_nhwc(const float *x, const float *t, int32_t n, int32_t h, int32_t w, int32_t c, int32_t ph, int32_t pw,
                 int32_t k, uint64_t *out, int32_t nthreads) {
    static const char fn[] = "ob_pack_nhwc";
    OB_REQUIRE(fn, n >= 0 && h >= 0 && w >= 0 && ph >= 0 && pw >= 0);
    OB_REQUIRE(fn, c >= 1 && c <= OB_MAX_CHANNELS && k == OB_WORDS(c));
    OB_REQUIRE(fn, (double)n * ((double)h + 2.0 * ph) * ((double)w + 2.0 * pw) * k < OB_MAX_ELEMS);
    OB_REQUIRE(fn, (double)n * h * w * c < OB_MAX_ELEMS);
    const int64_t rows = (int64_t)n * h;
    if (rows == 0 || w == 0) return OB_OK; /* nothing to write: the border is the caller's zero initialisation */
    OB_REQUIRE(fn, x != NULL && out != NULL);
    if (nthreads < 1) nthreads = 1;
    const int64_t wp = (int64_t)w + 2 * pw, hp = (int64_t)h + 2 * ph;
    const int vec = ob_use_avx2();
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t b = r / h, y = r % h;
        for (int32_t xx = 0; xx < w; xx++) {
            const float *src = x + ((r * w) + xx) * (int64_t)c;
            uint64_t *dst = out + (((b * hp) + y + ph) * wp + xx + pw) * (int64_t)k;
            for (int32_t j = 0; j < k; j++) {
                const int32_t c0 = j * 64, c1 = (c0 + 64 < c) ? c0 + 64 : c;
#if OB_X86 && defined(__GNUC__)
                if (vec) {
                    dst[j] = ob_pack_word_avx2(src, t, c0, c1);
                    continue;
                }
#endif
                dst[j] = ob_pack_word(src, t, c0, c1);
            }
        }
    }
    return OB_OK;
}
