"""Build of the optional packed-convolution kernels (``onebit/kernels/csrc/*.c``, shared header ``bitconv.h``).

Everything else lives in ``pyproject.toml``. The extension is plain C with a C ABI (loaded with ctypes, not a
Python module, not built against torch); it is ``optional``: without a working compiler the package still installs
and the pure-torch reference path runs (``onebit.kernels.backend_info()`` says why). OpenMP is used when the
compiler supports ``-fopenmp``; otherwise the build retries without it (single-threaded kernels). All the C files
are translation units of the one shared library ``onebit.kernels._bitconv``.
"""

from __future__ import annotations

import glob
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_CSRC = "onebit/kernels/csrc"
_SOURCES = sorted(glob.glob(f"{_CSRC}/*.c"))  # relative to the project root, as setuptools wants; a stable link order
# -ffp-contract=off: separate multiply and add, bitwise the torch reference's results. -fno-trapping-math: lets the
# compiler if-convert (vectorise) `v > 0 ? v : s * v` and the like (it changes no value, only which FP exception
# flags may be raised, which nothing reads); without it the PReLU passes run scalar with a branch per element (~40x).
_COMMON = ["-O3", "-std=c11", "-ffp-contract=off", "-fno-trapping-math", "-fno-strict-aliasing"]


class _BuildBitconv(build_ext):
    """Compile with OpenMP, fall back to a build without it, and never fail the install (the path is optional)."""

    def build_extension(self, ext: Extension) -> None:
        if self.compiler.compiler_type == "msvc":
            ext.extra_compile_args = ["/O2", "/openmp"]
            ext.extra_link_args = []
            super().build_extension(ext)
            return
        ext.libraries = [*ext.libraries, "m"]  # expf (the SE gate's sigmoid)
        try:
            ext.extra_compile_args = [*_COMMON, "-fopenmp"]
            ext.extra_link_args = ["-fopenmp"]
            super().build_extension(ext)
        except Exception as e:  # noqa: BLE001 - any compiler/linker failure: retry without OpenMP
            print(f"onebit: building the kernels with OpenMP failed ({e}); retrying without it", file=sys.stderr)
            ext.extra_compile_args = list(_COMMON)
            ext.extra_link_args = []
            super().build_extension(ext)

    def get_export_symbols(self, ext: Extension) -> list[str]:
        # a ctypes library, not a Python module: no PyInit_ symbol to export
        return []


setup(
    ext_modules=[Extension("onebit.kernels._bitconv", _SOURCES, depends=[f"{_CSRC}/bitconv.h"], optional=True)],
    cmdclass={"build_ext": _BuildBitconv},
)
