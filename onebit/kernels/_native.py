"""Loading the compiled packed-convolution library (``onebit/kernels/_bitconv*.so``) with ctypes.

The library is plain C with a C ABI (``csrc/*.c``, shared header ``csrc/bitconv.h``), built by ``pip install -e .``
/ ``pip install .`` through ``setup.py`` as an optional extension: a machine without a compiler still installs, and
:func:`load` then returns ``None`` with the reason kept for :func:`backend_info` (the pure-torch reference path runs
instead).
``ONEBIT_KERNELS=torch`` forces the reference path; ``ONEBIT_KERNEL_ISA=portable|popcnt|avx2|avx512`` caps the ISA;
``ONEBIT_KERNEL_LIBRARY=/path/to/lib.so`` loads that build of the same sources instead of the one next to this file
(e.g. the sanitizer build of ``.ci/sanitize.sh``; a path that does not load is an error, not a fallback).

Argument checks. Every entry point validates its own arguments (dims, word counts, buffer geometry, non-NULL
pointers where there is work) and returns a negative code instead of touching memory; :func:`check` turns that into
:class:`KernelArgumentError` with the precondition the library names (``ob_last_error``). The callers in
:mod:`onebit.kernels.ops` and :mod:`onebit.kernels.fuse` check the tensors themselves (dtype, device, contiguity,
shapes consistent with the dims they pass) before every call: the C side cannot see a buffer's size.
"""

from __future__ import annotations

import ctypes
import os
import warnings
from pathlib import Path

__all__ = ["ISA_NAMES", "ConvArgs", "KernelArgumentError", "backend_info", "check", "load", "select_isa"]

ISA_NAMES = ("portable", "popcnt", "avx2", "avx512_vpopcntdq")
_ABI = 8  # ob_abi_version() (csrc/isa.c) of the library this module binds
_LIBRARY_ENV = "ONEBIT_KERNEL_LIBRARY"
_EINVAL, _ENOMEM = -1, -2  # OB_EINVAL, OB_ENOMEM of csrc/bitconv.h
_ISA_ENV = {"portable": 0, "popcnt": 1, "avx2": 2, "avx512": 3, "avx512_vpopcntdq": 3}


class KernelArgumentError(ValueError, RuntimeError):
    """An input the packed engine cannot take: a shape, dtype, device or layout that does not fit the packed modules
    or kernel buffers. A ``ValueError``, and a ``RuntimeError`` like the error a float module raises for the same
    input (``F.conv2d``, ``F.avg_pool2d``, broadcasting), so code catching the eval model's error catches it too."""


_p = ctypes.c_void_p
_i = ctypes.c_int32


class ConvArgs(ctypes.Structure):
    """Mirror of ``ob_conv_args`` in ``csrc/bitconv.h`` (field order and types must match)."""

    _fields_ = [
        ("x", _p),
        ("n", _i),
        ("hp", _i),
        ("wp", _i),
        ("k", _i),
        ("h", _i),
        ("w", _i),
        ("wq", _p),
        ("o", _i),
        ("kh", _i),
        ("kw", _i),
        ("c", _i),
        ("stride", _i),
        ("pad", _i),
        ("oh", _i),
        ("ow", _i),
        ("corr", _p),
        ("out_int", _p),
        ("scale", _p),
        ("bias", _p),
        ("res", _p),
        ("res_c", _i),
        ("act_in", _p),
        ("slope", _p),
        ("act_out", _p),
        ("out_f", _p),
        ("thresh", _p),
        ("out_bits", _p),
        ("bph", _i),
        ("bpw", _i),
        ("bk", _i),
        ("nthreads", _i),
        ("ctab", _p),  # filled by ob_conv itself (left NULL here)
        ("crow", _p),
        ("ccol", _p),
        ("cnc", _i),
    ]


_lib: ctypes.CDLL | None = None
_path: Path | None = None  # the library loaded
_reason: str | None = None
_loaded = False


def _find() -> Path | None:
    env = os.environ.get(_LIBRARY_ENV, "")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    for pattern in ("_bitconv*.so", "_bitconv*.pyd", "_bitconv*.dylib"):
        hits = sorted(here.glob(pattern))
        if hits:
            return hits[0]
    return None


def _bind(lib: ctypes.CDLL) -> None:
    lib.ob_cpu_isa.restype = ctypes.c_int
    lib.ob_select_isa.argtypes = [ctypes.c_int]
    lib.ob_select_isa.restype = ctypes.c_int
    lib.ob_isa.restype = ctypes.c_int
    lib.ob_has_openmp.restype = ctypes.c_int
    lib.ob_abi_version.restype = ctypes.c_int
    lib.ob_last_error.restype = ctypes.c_char_p
    lib.ob_pack_nhwc.argtypes = [_p, _p, _i, _i, _i, _i, _i, _i, _i, _p, _i]
    lib.ob_pack_nhwc.restype = ctypes.c_int
    lib.ob_gate_residual.argtypes = [_p, _p, _i, _i, _i, _i, _p, _p, _i, _p, _i, _p, _p, _i, _i, _i, _i]
    lib.ob_gate_residual.restype = ctypes.c_int
    lib.ob_mix_mean.argtypes = [_p, _p, _i, _i, _i, _p, _p, _p, _i]
    lib.ob_mix_mean.restype = ctypes.c_int
    lib.ob_elm_residual.argtypes = [_p, _i, _i, _i, _i, _p, _i, _p, _p, _i]
    lib.ob_elm_residual.restype = ctypes.c_int
    lib.ob_se_gate.argtypes = [_p, _i, _i, _i, _p, _p, _p, _p, _p, _p, _p, _i]
    lib.ob_se_gate.restype = ctypes.c_int
    lib.ob_conv.argtypes = [ctypes.POINTER(ConvArgs)]
    lib.ob_conv.restype = ctypes.c_int
    lib.ob_react_block.argtypes = [ctypes.POINTER(ConvArgs), ctypes.POINTER(ConvArgs), _p, _p, _p, _i, _p, _p, _i]
    lib.ob_react_block.restype = ctypes.c_int
    lib.ob_bnext_processor.argtypes = [ctypes.POINTER(ConvArgs), _p, _p, _p, _p, _p, _p, _i, _i, _p, _i]
    lib.ob_bnext_processor.restype = ctypes.c_int
    lib.ob_ceiling.argtypes = [ctypes.c_int64, ctypes.c_uint64, ctypes.POINTER(ctypes.c_double)]
    lib.ob_ceiling.restype = ctypes.c_uint64


def check(rc: int, name: str) -> int:
    """``rc`` of the entry point ``name`` when it succeeded (>= 0), else raise what it reported.

    Raises:
        KernelArgumentError: the library refused its arguments (a bug of the caller's checks: nothing was touched).
        MemoryError: a temporary buffer could not be allocated.
    """
    if rc >= 0:
        return rc
    msg = (_lib.ob_last_error() or b"").decode(errors="replace") if _lib is not None else ""
    if rc == _ENOMEM:
        raise MemoryError(f"{name}: {msg or 'could not allocate a temporary buffer'}")
    raise KernelArgumentError(f"{name} refused its arguments (code {rc}): {msg or 'no detail'}")


def load() -> ctypes.CDLL | None:
    """The compiled library, or ``None`` (reason in :func:`backend_info`) when it is absent, fails to load or is
    switched off with ``ONEBIT_KERNELS=torch``. Warns once when a build was expected but none loads."""
    global _lib, _path, _reason, _loaded
    if _loaded:
        return _lib
    _loaded = True
    if os.environ.get("ONEBIT_KERNELS", "").lower() == "torch":
        _reason = "ONEBIT_KERNELS=torch forces the pure-torch reference path"
        return None
    path = _find()
    if os.environ.get(_LIBRARY_ENV) and path is not None and not path.is_file():
        _loaded = False  # raised on every call, not once
        raise FileNotFoundError(f"{_LIBRARY_ENV}={path}: no such library")
    if path is None:
        _reason = (
            "no compiled kernel (onebit/kernels/_bitconv*.so) found: the package was installed without a working "
            "C compiler, or not through `pip install -e .`; the pure-torch reference path is used"
        )
        warnings.warn(_reason, RuntimeWarning, stacklevel=2)
        return None
    try:
        lib = ctypes.CDLL(str(path))
        lib.ob_abi_version.restype = ctypes.c_int
        if lib.ob_abi_version() != _ABI:  # checked before binding: a stale build lacks newer symbols
            raise OSError(f"ABI version {lib.ob_abi_version()} != {_ABI} (stale build: rerun `pip install -e .`)")
        _bind(lib)
    except (OSError, AttributeError) as e:
        if os.environ.get(_LIBRARY_ENV):  # asked for by path: silently testing the reference path would mislead
            _loaded = False
            raise OSError(f"{_LIBRARY_ENV}={path} failed to load: {e}") from e
        _reason = f"{path.name} failed to load ({e}); the pure-torch reference path is used"
        warnings.warn(_reason, RuntimeWarning, stacklevel=2)
        return None
    isa = os.environ.get("ONEBIT_KERNEL_ISA", "").lower()
    if isa:
        if isa not in _ISA_ENV:
            raise ValueError(f"ONEBIT_KERNEL_ISA must be one of {sorted(_ISA_ENV)}, got {isa!r}")
        lib.ob_select_isa(_ISA_ENV[isa])
    _lib, _path = lib, path
    return lib


def select_isa(name: str | None) -> str:
    """Cap the kernel ISA (``None``: the best this CPU supports). Returns the ISA now in use.

    Raises:
        RuntimeError: when no compiled library is loaded.
        ValueError: for an unknown ISA name.
    """
    lib = load()
    if lib is None:
        raise RuntimeError(f"no compiled kernel: {_reason}")
    if name is not None and name not in _ISA_ENV:
        raise ValueError(f"unknown ISA {name!r}; one of {sorted(_ISA_ENV)}")
    return ISA_NAMES[lib.ob_select_isa(-1 if name is None else _ISA_ENV[name])]


def backend_info() -> dict:
    """Which backend the packed engine uses on CPU tensors: ``{"backend": "native"|"torch", "isa", "cpu_isa",
    "openmp", "library", "reason", "int8", "cuda"}`` (``reason`` says why the native kernel is not used, when it is
    not). ``int8``: the int8 GEMM backend (``torch._int_mm``) is available — ``backend="auto"`` uses it for CUDA
    tensors, and ``backend="int8"`` forces it on CPU too; ``cuda``: a CUDA device is present."""
    import torch

    gpu = {"int8": hasattr(torch, "_int_mm"), "cuda": torch.cuda.is_available()}
    lib = load()
    if lib is None:
        return {
            "backend": "torch", "isa": None, "cpu_isa": None, "openmp": False, "library": None, "reason": _reason, **gpu
        }  # fmt: skip
    return {
        "backend": "native",
        "isa": ISA_NAMES[lib.ob_isa()],
        "cpu_isa": ISA_NAMES[lib.ob_cpu_isa()],
        "openmp": bool(lib.ob_has_openmp()),
        "library": str(_path),
        "reason": None,
        **gpu,
    }
