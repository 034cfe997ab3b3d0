/* Sign + pack: float NHWC activations to the packed bit layout of bitconv.h (ob_pack_nhwc); the per-word helpers
 * (ob_pack_word and its AVX2/AVX-512 variants) are in bitconv.h, shared with the fused packing of bnext.c. */
#include "bitconv.h"

/* ------------------------------------------------------------------------------------------------ sign + pack */
/* bits of (x + t >= 0) for x float [N, H, W, C] (NHWC contiguous) into zero-initialised out [N, H+2ph, W+2pw, K]. */
void ob_pack_nhwc(const float *x, const float *t, int32_t n, int32_t h, int32_t w, int32_t c, int32_t ph, int32_t pw,
                  int32_t k, uint64_t *out, int32_t nthreads) {
    const int64_t rows = (int64_t)n * h;
    const int32_t wp = w + 2 * pw, hp = h + 2 * ph;
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
}
