/* The popcount ceiling benchmark (ob_ceiling): the XOR + popcount + add loop of each ISA in registers. */
#include "bitconv.h"

/* ------------------------------------------------------------------------------------------------ ceiling */
/* XOR + popcount + add throughput in registers: `iters` rounds over 16 independent 64-bit (or vector) chains,
 * nothing loaded from memory inside the loop. Returns a checksum so the work cannot be optimised away; the
 * caller times it and divides the bit count (iters * 16 * lane bits) by the time. */
static uint64_t ob_ceiling_portable(int64_t iters, uint64_t seed, int32_t *bits_per_round) {
    uint64_t x[8], acc[8] = {0};
    for (int i = 0; i < 8; i++) x[i] = seed * (i + 3) + 0x9E3779B97F4A7C15ULL;
    for (int64_t it = 0; it < iters; it++)
        for (int i = 0; i < 8; i++) {
            acc[i] += ob_popcount_portable(x[i] ^ (uint64_t)it);
        }
    *bits_per_round = 8 * 64;
    uint64_t s = 0;
    for (int i = 0; i < 8; i++) s += acc[i];
    return s;
}

#if OB_X86 && defined(__GNUC__)
__attribute__((target("popcnt"))) static uint64_t ob_ceiling_popcnt(int64_t iters, uint64_t seed, int32_t *bpr) {
    uint64_t x[8], acc[8] = {0};
    for (int i = 0; i < 8; i++) x[i] = seed * (i + 3) + 0x9E3779B97F4A7C15ULL;
    for (int64_t it = 0; it < iters; it++)
        for (int i = 0; i < 8; i++) acc[i] += (uint64_t)__builtin_popcountll(x[i] ^ (uint64_t)it);
    *bpr = 8 * 64;
    uint64_t s = 0;
    for (int i = 0; i < 8; i++) s += acc[i];
    return s;
}

__attribute__((target("avx2,popcnt"))) static uint64_t ob_ceiling_avx2(int64_t iters, uint64_t seed, int32_t *bpr) {
    /* the instruction mix of ob_kernel_avx2's inner loop per 256 bits: XOR of the low and the high nibbles, two
     * lookups, two byte adds (inputs pre-split, as the kernel's); the byte counters emptied every 31 rounds */
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2,
                                         2, 3, 2, 3, 3, 4);
    const __m256i zero = _mm256_setzero_si256();
    __m256i wl[8], wh[8], acc[8], tot = zero;
    for (int i = 0; i < 8; i++) {
        wl[i] = _mm256_set1_epi64x((long long)((seed * (i + 3)) & 0x0F0F0F0F0F0F0F0FULL));
        wh[i] = _mm256_set1_epi64x((long long)(((seed * (i + 5)) >> 4) & 0x0F0F0F0F0F0F0F0FULL));
        acc[i] = zero;
    }
    __m256i xl = _mm256_set1_epi64x((long long)(seed & 0x0F0F0F0F0F0F0F0FULL));
    __m256i xh = _mm256_set1_epi64x((long long)((seed >> 4) & 0x0F0F0F0F0F0F0F0FULL));
    const __m256i step = _mm256_set1_epi8(1);
    for (int64_t it = 0; it < iters; it += 31) {
        for (int r = 0; r < 31; r++) {
            xl = _mm256_add_epi8(xl, step);
            xh = _mm256_add_epi8(xh, step);
            for (int i = 0; i < 8; i++)
                acc[i] = _mm256_add_epi8(acc[i], _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_xor_si256(xl, wl[i])),
                                                                 _mm256_shuffle_epi8(lut, _mm256_xor_si256(xh, wh[i]))));
        }
        for (int i = 0; i < 8; i++) {
            tot = _mm256_add_epi64(tot, _mm256_sad_epu8(acc[i], zero));
            acc[i] = zero;
        }
    }
    *bpr = 8 * 256;
    int64_t t[4];
    _mm256_storeu_si256((__m256i *)t, tot);
    return (uint64_t)(t[0] + t[1] + t[2] + t[3]);
}

__attribute__((target("avx512f,avx512vpopcntdq"))) static uint64_t ob_ceiling_avx512(int64_t iters, uint64_t seed,
                                                                                     int32_t *bpr) {
    __m512i acc[8], w[8];
    for (int i = 0; i < 8; i++) {
        acc[i] = _mm512_setzero_si512();
        w[i] = _mm512_set1_epi64((long long)(seed * (i + 3)));
    }
    __m512i xv = _mm512_set1_epi64((long long)seed);
    const __m512i step = _mm512_set1_epi64(1);
    for (int64_t it = 0; it < iters; it++) {
        xv = _mm512_add_epi64(xv, step);
        for (int i = 0; i < 8; i++) acc[i] = _mm512_add_epi64(acc[i], _mm512_popcnt_epi64(_mm512_xor_si512(xv, w[i])));
    }
    *bpr = 8 * 512;
    __m512i s = acc[0];
    for (int i = 1; i < 8; i++) s = _mm512_add_epi64(s, acc[i]);
    int64_t t[8];
    _mm512_storeu_si512((void *)t, s);
    uint64_t r = 0;
    for (int i = 0; i < 8; i++) r += (uint64_t)t[i];
    return r;
}
#endif

/* Run the in-register XOR+popcount+add loop of the selected ISA; *bits receives the binary MACs performed. Bad
 * arguments (bits NULL, iters < 0) run nothing: returns 0 (and *bits = 0 when bits is given). */
uint64_t ob_ceiling(int64_t iters, uint64_t seed, double *bits) {
    if (bits == NULL) {
        ob_fail("ob_ceiling", "precondition `bits != NULL` violated");
        return 0;
    }
    if (iters < 0) {
        *bits = 0.0;
        ob_fail("ob_ceiling", "precondition `iters >= 0` violated");
        return 0;
    }
    if (iters > INT64_MAX / 64) iters = INT64_MAX / 64; /* the AVX2 rounding up to 31 rounds stays in range */
    int32_t bpr = 0;
    uint64_t s;
    const int isa = ob_isa();
#if OB_X86 && defined(__GNUC__)
    if (isa == OB_ISA_AVX512) {
        s = ob_ceiling_avx512(iters, seed, &bpr);
    } else if (isa == OB_ISA_AVX2) {
        iters = (iters + 30) / 31 * 31;
        s = ob_ceiling_avx2(iters, seed, &bpr);
    } else if (isa == OB_ISA_POPCNT) {
        s = ob_ceiling_popcnt(iters, seed, &bpr);
    } else
#endif
    {
        s = ob_ceiling_portable(iters, seed, &bpr);
    }
    (void)isa;
    *bits = (double)iters * (double)bpr;
    return s;
}
