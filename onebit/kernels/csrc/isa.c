/* CPU ISA detection and selection of the bitconv library (ob_cpu_isa, ob_select_isa, ob_isa), ob_has_openmp and
 * ob_abi_version. The selected ISA is private to this file: the other files read it through ob_isa() (once per
 * entry-point call). */
#include "bitconv.h"

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

int ob_abi_version(void) { return 4; }
