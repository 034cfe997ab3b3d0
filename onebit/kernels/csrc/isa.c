/* CPU ISA detection and selection of the bitconv library (ob_cpu_isa, ob_select_isa, ob_isa), ob_has_openmp,
 * ob_abi_version and the argument-error record (ob_fail, ob_nomem, ob_last_error). The selected ISA is private to
 * this file: the other files read it through ob_isa() (once per entry-point call). */
#include <stdio.h>

#include "bitconv.h"

#if defined(_MSC_VER)
#define OB_TLS __declspec(thread)
#else
#define OB_TLS _Thread_local
#endif

static int g_isa = -1;

int ob_cpu_isa(void) {
#if OB_X86 && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq")) return OB_ISA_AVX512;
    if (__builtin_cpu_supports("avx2")) return OB_ISA_AVX2;
    if (__builtin_cpu_supports("popcnt")) return OB_ISA_POPCNT;
#endif
    return OB_ISA_PORTABLE;
}

/* Select an ISA (clamped to what the CPU supports); -1 = the best supported. Returns the ISA now in use. */
int ob_select_isa(int isa) {
    int best = ob_cpu_isa();
    g_isa = (isa < 0 || isa > best) ? best : isa;
    return g_isa;
}

int ob_isa(void) {
    if (g_isa < 0) ob_select_isa(-1);
    return g_isa;
}

int ob_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* 5: every entry point validates its arguments and returns int (OB_OK / OB_EINVAL / OB_ENOMEM; ob_conv the ISA);
 *    ob_last_error; the sign rule !(v < 0) (NaN reads as +1, like 0) */
/* 6: ob_react_block (chain.c) */
int ob_abi_version(void) { return 8; }

/* the failing entry point and condition of this thread's last rejected call (string literals: nothing to free) */
static OB_TLS const char *g_err_fn = 0, *g_err_what = 0;
static OB_TLS char g_err_buf[512];

int ob_fail(const char *fn, const char *what) {
    g_err_fn = fn;
    g_err_what = what;
    return OB_EINVAL;
}

int ob_nomem(const char *fn) {
    g_err_fn = fn;
    g_err_what = "could not allocate a temporary buffer";
    return OB_ENOMEM;
}

const char *ob_last_error(void) {
    if (!g_err_fn) return "";
    snprintf(g_err_buf, sizeof g_err_buf, "%s: %s", g_err_fn, g_err_what);
    return g_err_buf;
}
