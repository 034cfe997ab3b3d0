/* Packed XOR-popcount binary convolution kernels with a plain C ABI (loaded with ctypes by onebit/kernels/_native.py):
 * the shared header of the translation units of the one library onebit.kernels._bitconv (isa.c: ISA detection and
 * selection; pack.c: sign + pack; bnext.c: the BNext float passes; conv.c: epilogue, conv kernels and ob_conv;
 * chain.c: a ReActNet-A block in one call; bnext_chain.c: a BNext processor in one call; ceiling.c: the popcount
 * ceiling benchmark). It holds the includes, the ISA/OpenMP macros, ob_conv_args, ob_bnext_args, the prototypes of
 * the exported entry points and the static inline helpers that more than one file uses.
 *
 * Layouts (all row-major, NHWC):
 *   activations  uint64 [N, Hp, Wp, K]: channels packed along the last axis, bit c%64 of word c/64 = (x_c + t_c >= 0);
 *                bits of channels >= C are 0; the spatial border (the conv's padding) is all-zero words.
 *   weights      uint64 [O8, KH, KW*K, 8]: blocks of 8 output channels, word j of a kernel row of each of the 8;
 *                channels >= O and bits of input channels >= C are 0. The AVX2 kernel splits them into low/high
 *                nibbles (w & 0x0F.., (w >> 4) & 0x0F..) itself, a cache-sized group of blocks at a time (inputs of
 *                at most 32 channels: the low 32 bits of each word only, 8 channels per vector).
 * For +-1 vectors of n values dot = n - 2 popcount(x XOR w). A zero border word reads as n values of -1, so a
 * padded tap contributes -sum(w_tap); the caller passes corr[tap][o] = (1 + pad_value) * sum(w_tap) (pad_value 0
 * for the official zero padding), which is added for every tap that falls outside the input: exact zero padding.
 *
 * Every entry point takes the thread count (torch.get_num_threads() on the Python side) and uses OpenMP when the
 * build had it. ISA variants are compiled with __attribute__((target)) so one shared object runs on any x86-64 CPU;
 * the best one the CPU supports is chosen at run time (ob_select_isa), lower ones can be forced for testing.
 * Floating-point epilogues use separate multiply and add (built with -ffp-contract=off), in the order of the torch
 * reference, so both give bitwise-equal results.
 *
 * Sign rule: a value v binarizes to bit 1 (+1) unless v < 0, i.e. an exact 0 and a NaN both read as +1 (the float
 * models' sign gives 0 for both; the packed world has no 0). Comparisons are written !(v < 0): _CMP_NLT_UQ.
 *
 * Arguments: every entry point validates its arguments before it touches memory (dims non-negative, word counts
 * consistent with channel counts, output sizes consistent with the declared input and buffer dims, non-NULL
 * pointers wherever there is work) and returns a negative code instead: OB_EINVAL (bad argument; ob_last_error()
 * names the violated precondition) or OB_ENOMEM (a temporary buffer could not be allocated). Success is OB_OK (0),
 * or for ob_conv the ISA that ran (>= 0). A batch of 0 (n == 0) is valid and does nothing. The pointers themselves
 * cannot be checked against their allocations: the caller (onebit/kernels/ops.py, fuse.py) checks the tensors'
 * shapes, dtypes and contiguity against these dims at the Python/C boundary.
 */
#ifndef ONEBIT_BITCONV_H
#define ONEBIT_BITCONV_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define OB_X86 1
#else
#define OB_X86 0
#endif

#define OB_ISA_PORTABLE 0
#define OB_ISA_POPCNT 1
#define OB_ISA_AVX2 2
#define OB_ISA_AVX512 3

#define OB_TILE_P 4 /* output pixels per register tile */
#define OB_TILE_Q 8 /* output channels per register tile (one byte of packed output) */

typedef struct {
    /* input activations (padded, packed) */
    const uint64_t *x;
    int32_t n, hp, wp, k; /* batch, padded height/width, words per pixel */
    int32_t h, w;         /* unpadded input size */
    /* weights */
    const uint64_t *wq; /* [O8, KH, KW*K, 8] */
    int32_t o, kh, kw, c, stride, pad;
    int32_t oh, ow;
    const int32_t *corr; /* [KH*KW, O] or NULL (no padding correction) */
    /* epilogue */
    int32_t *out_int;   /* [N, OH, OW, O] or NULL */
    const float *scale; /* [O] y = dot * scale + bias */
    const float *bias;  /* [O] or NULL */
    const float *res;   /* [N, OH, OW, res_c] or NULL: y += res[p, o % res_c] */
    int32_t res_c;
    const float *act_in;    /* [O] or NULL: y += act_in before the PReLU */
    const float *slope;     /* [O] or NULL: PReLU slope (NULL: no activation) */
    const float *act_out;   /* [O] or NULL: y += act_out after the PReLU */
    float *out_f;           /* [N, OH, OW, O] or NULL */
    const float *thresh;    /* [O] or NULL: next bits = (y + thresh >= 0) */
    uint8_t *out_bits;      /* [N, OH + 2 bph, OW + 2 bpw, bk] words as bytes, or NULL; zero-initialised */
    int32_t bph, bpw, bk;   /* padding and words per pixel of the packed output */
    int32_t nthreads;
    /* filled by ob_conv for its kernels (whatever the caller passes is ignored): the padding correction summed per
     * border class, ctab[(crow[y] * cnc + ccol[x]) * o + ch] for output pixel (y, x), or ctab NULL (per tap) */
    const int32_t *ctab, *crow, *ccol;
    int32_t cnc;
} ob_conv_args;

/* The call-invariant arguments of a BNext processor beyond its conv (ob_bnext_processor, bnext_chain.c; mirrored by
 * BNextArgs in onebit/kernels/bnext_chain.py: field order and types must match). Channels: Cin = the conv's c,
 * C = its o. */
typedef struct {
    int32_t elm;                    /* tail: 1 ELM-Attention a Z R + h2 + R; 0 Info-RCP a Z + h2 + R */
    int32_t residual;               /* R: 0 the input x (stride 1); 1 ob_elm_residual of x with slope (PReLU, the
                                       2x2 pool at stride 2); 2 the caller's r */
    const float *slope;             /* [Cin]: the PReLU slope of residual 1 (all ones: the plain 2x2 pool) */
    const float *shift;             /* [Cin] or NULL: the input shift of the sign+pack */
    int32_t recouple;               /* the pooled lambda-mix and the SE gate (else the gate is g2) */
    int32_t mix_residual;           /* the mix reference: 1 R; 0 x (stride 1), its 2x2 pool (residual 1, stride 2)
                                       or the caller's ref (residual 2) */
    const float *lam, *oml;         /* [C] lambda and 1 - lambda (recouple) */
    int32_t hd;                     /* SE hidden width (recouple) */
    const float *w1, *b1, *w2, *b2; /* SE: w1 [HD, C], b1 [HD], w2 [C, HD], b2 [C] (recouple) */
    const float *g2, *h2;           /* [C] BN2 gain and shift */
    const float *thresh;            /* [C] or NULL: the next processor's shift (emitted bits) */
    int32_t bpad;                   /* border of the emitted bits */
} ob_bnext_args;

/* ------------------------------------------------------------------------------------------------ entry points */
#define OB_OK 0
#define OB_EINVAL (-1) /* a bad argument: nothing was touched */
#define OB_ENOMEM (-2) /* a temporary buffer could not be allocated: no output was written */

/* isa.c */
int ob_cpu_isa(void);
int ob_select_isa(int isa);
int ob_isa(void);
int ob_has_openmp(void);
int ob_abi_version(void);
const char *ob_last_error(void); /* what the last failing call of this thread rejected ("" when none) */
/* pack.c */
int ob_pack_nhwc(const float *x, const float *t, int32_t n, int32_t h, int32_t w, int32_t c, int32_t ph, int32_t pw,
                 int32_t k, uint64_t *out, int32_t nthreads);
/* bnext.c */
int ob_gate_residual(const float *z, const float *r, int32_t n, int32_t h, int32_t w, int32_t c, const float *a,
                     const float *hb, int32_t mul_r, float *out, int32_t ldo, const float *thresh, uint64_t *bits,
                     int32_t bpad, int32_t bk, int32_t bword0, int32_t nthreads);
int ob_mix_mean(const float *ref, const float *z, int32_t n, int32_t hw, int32_t c, const float *lam, const float *oml,
                float *out, int32_t nthreads);
int ob_elm_residual(const float *x, int32_t n, int32_t h, int32_t w, int32_t c, const float *slope, int32_t stride,
                    float *px, float *r, int32_t nthreads);
int ob_se_gate(const float *p, int32_t n, int32_t c, int32_t hd, const float *w1, const float *b1, const float *w2,
               const float *b2, const float *g, float *a, float *hidden, int32_t nthreads);
/* conv.c */
int ob_conv(const ob_conv_args *a);
/* bnext_chain.c */
int ob_bnext_processor(const ob_conv_args *conv, const ob_bnext_args *p, const float *x, const uint64_t *xp,
                       const float *r, const float *ref, float *out, int32_t ldo, int32_t offset, uint64_t *bits,
                       int32_t nthreads);
/* chain.c */
int ob_react_block(const ob_conv_args *c1, const ob_conv_args *c2, const float *x, const float *shift,
                   const uint64_t *xp, int32_t stride, float *out, uint64_t *bits, int32_t nthreads);
/* ceiling.c */
uint64_t ob_ceiling(int64_t iters, uint64_t seed, double *bits);

/* ------------------------------------------------------------------------------------------------ argument checks */
/* isa.c: record the failing entry point and check for ob_last_error; return OB_EINVAL / OB_ENOMEM */
int ob_fail(const char *fn, const char *what);
int ob_nomem(const char *fn);
/* conv.c: the preconditions of ob_conv for the arguments a, failures recorded under the entry point name fn */
int ob_conv_check(const ob_conv_args *a, const char *fn);
/* return OB_EINVAL from the calling entry point FN when COND does not hold (the message quotes the condition) */
#define OB_REQUIRE(FN, COND)                                                                                       \
    do {                                                                                                            \
        if (!(COND)) return ob_fail(FN, "precondition `" #COND "` violated");                                      \
    } while (0)
/* words of c channels, without int32 overflow */
#define OB_WORDS(c) (((int64_t)(c) + 63) / 64)
/* a sanity bound on element counts (far above any real tensor; keeps every int64 index product exact) */
#define OB_MAX_ELEMS 4.0e18
/* a bound on channel counts: channel and word offsets (c0 + 64, j * 64, ...) stay within int32 */
#define OB_MAX_CHANNELS (1 << 30)

/* whether the AVX2 variants of the element-wise passes run (the CPU has AVX2 and no lower ISA was selected) */
static inline int ob_use_avx2(void) {
#if OB_X86 && defined(__GNUC__)
    return ob_isa() >= OB_ISA_AVX2;
#else
    return 0;
#endif
}

/* ------------------------------------------------------------------------------------------------ sign + pack */
/* bits of channels [c0, c1) of one pixel; bit ch - c0 = !(src[ch] + t[ch] < 0) (0 and NaN: +1) */
static inline uint64_t ob_pack_word(const float *src, const float *t, int32_t c0, int32_t c1) {
    uint64_t word = 0;
    if (t) {
        for (int32_t ch = c0; ch < c1; ch++) word |= (uint64_t)!(src[ch] + t[ch] < 0.0f) << (ch - c0);
    } else {
        for (int32_t ch = c0; ch < c1; ch++) word |= (uint64_t)!(src[ch] < 0.0f) << (ch - c0);
    }
    return word;
}

#if OB_X86 && defined(__GNUC__)
/* the same bits 8 channels at a time (compare, movemask); the same float addition, so the same results */
__attribute__((target("avx2"))) static inline uint64_t ob_pack_word_avx2(const float *src, const float *t, int32_t c0,
                                                                         int32_t c1) {
    uint64_t word = 0;
    int32_t ch = c0;
    const __m256 zero = _mm256_setzero_ps();
    for (; ch + 8 <= c1; ch += 8) {
        __m256 v = _mm256_loadu_ps(src + ch);
        if (t) v = _mm256_add_ps(v, _mm256_loadu_ps(t + ch));
        word |= (uint64_t)(uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_NLT_UQ)) << (ch - c0);
    }
    return word | (ch < c1 ? ob_pack_word(src, t, ch, c1) << (ch - c0) : 0);
}

/* 16 channels at a time (compare into a mask) */
__attribute__((target("avx512f"))) static inline uint64_t ob_pack_word_avx512(const float *src, const float *t,
                                                                             int32_t c0, int32_t c1) {
    uint64_t word = 0;
    int32_t ch = c0;
    const __m512 zero = _mm512_setzero_ps();
    for (; ch + 16 <= c1; ch += 16) {
        __m512 v = _mm512_loadu_ps(src + ch);
        if (t) v = _mm512_add_ps(v, _mm512_loadu_ps(t + ch));
        word |= (uint64_t)_mm512_cmp_ps_mask(v, zero, _CMP_NLT_UQ) << (ch - c0);
    }
    return word | (ch < c1 ? ob_pack_word(src, t, ch, c1) << (ch - c0) : 0);
}
#endif

/* popcount without the POPCNT instruction (the portable kernel and ceiling) */
static inline uint64_t ob_popcount_portable(uint64_t v) {
    v = v - ((v >> 1) & 0x5555555555555555ULL);
    v = (v & 0x3333333333333333ULL) + ((v >> 2) & 0x3333333333333333ULL);
    v = (v + (v >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
    return (v * 0x0101010101010101ULL) >> 56;
}

#endif /* ONEBIT_BITCONV_H */
