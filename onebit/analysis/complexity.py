"""Model complexity in the papers' conventions: #Param (MB), BOPs, FLOPs, OPs.

Conventions (ReActNet/BNext papers; ``docs/official-code.md``, *Model size* and *Operation counts*):

* **Parameters** are split into *binary* — the latent weights of :class:`~onebit.layers.BinaryMixin` layers whose
  ``binarize_weight`` is on — and *real*: every other parameter (BN affine, PReLU, shifts, lambda, SE, stem, fc, and
  also parameters the forward never uses). Buffers (BN statistics, temperatures) are not parameters.
* **#Param (MB)** = (n_binary * 1 bit + n_real * 32 bit) / 8 / 2**20 — mebibytes, which is what reproduces the
  papers' tables (decimal megabytes do not).
* **BOPs** = multiply-accumulates (MACs) of binary convolutions/linears, i.e. layers with *both* ``binarize_input``
  and ``binarize_weight`` on. **FLOPs** = MACs of every other ``nn.Conv1d/2d/3d`` and ``nn.Linear`` — including
  binary layers with only one of the two switches on (an XNOR/popcount kernel needs both operands binary, so such a
  layer still runs real-valued MACs; e.g. a step-1 model of a two-step recipe has 0 BOPs). BN, PReLU, pooling,
  additions and SE gating are not counted.
* **OPs** = BOPs / 64 + FLOPs.
* **Quantised layers** (:mod:`onebit.quantize`, BNext §7.5): a weight with integer codes counts its ``weight_bits``
  in #Param (MB) instead of 32, and the MACs of such layers are the paper's "QOPs": they stay in FLOPs but the
  post-quantisation OPs (``ops_quant``, the "†" rows) count them / 8.

MACs are measured with forward hooks on one batch-1 forward pass (eval mode, no grad), so every call of a layer is
counted with its real output size. ``assume_binary=True`` counts every binary layer as fully binary whatever its
switches, i.e. the deployed cost of a model that a later stage will binarize (the official step-1 key files report
their model this way).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from onebit.layers.binary import BinaryMixin

__all__ = ["ComplexityReport", "LayerComplexity", "complexity", "format_table", "parameter_bits", "quantized_size_mib"]

_MAC_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class LayerComplexity:
    """One module that owns parameters or performs MACs.

    Attributes:
        name: qualified module name (``""`` for the root).
        type: class name.
        kind: ``"binary"`` when its MACs count as BOPs, else ``"real"``.
        params_binary: binary latent weights owned directly by this module.
        params_real: other parameters owned directly by this module.
        macs: multiply-accumulates per image, summed over every call in the forward.
        calls: how many times the forward called it.
    """

    name: str
    type: str
    kind: str
    params_binary: int = 0
    params_real: int = 0
    macs: int = 0
    calls: int = 0


@dataclass
class ComplexityReport:
    """Totals and per-layer rows of :func:`complexity` (see the module docstring for the conventions)."""

    input_size: tuple[int, ...]
    n_binary: int
    n_real: int
    bops: int
    flops: int
    layers: list[LayerComplexity] = field(default_factory=list)
    real_bits: int | None = None
    qmacs: int = 0

    @property
    def n_params(self) -> int:
        return self.n_binary + self.n_real

    @property
    def mb(self) -> float:
        """#Param (MB) as in the papers: binary weights at 1 bit, quantised weights at their bits, the rest 32, MiB."""
        real_bits = 32 * self.n_real if self.real_bits is None else self.real_bits
        return (self.n_binary + real_bits) / 8 / 2**20

    @property
    def mb_float_rest(self) -> float:
        """#Param (MB) with every non-binary parameter at 32 bit, quantised or not (the papers' "w/o post-quant")."""
        return (self.n_binary + 32 * self.n_real) / 8 / 2**20

    @property
    def mb_fp32(self) -> float:
        """Size with every parameter in float32, MiB."""
        return 4 * self.n_params / 2**20

    @property
    def ops(self) -> float:
        return self.bops / 64 + self.flops

    @property
    def ops_quant(self) -> float:
        """OPs after post-training quantisation (the papers' "†" rows): quantised-layer MACs ("QOPs") / 8."""
        return self.bops / 64 + (self.flops - self.qmacs) + self.qmacs / 8

    @property
    def binary_share(self) -> float:
        """BOPs / (BOPs + FLOPs): the share of MACs that run binary."""
        total = self.bops + self.flops
        return self.bops / total if total else 0.0

    def to_dict(self, per_layer: bool = True) -> dict:
        """JSON-able dict: totals (and the per-layer rows unless ``per_layer=False``)."""
        d = {
            "input_size": list(self.input_size),
            "n_binary": self.n_binary,
            "n_real": self.n_real,
            "n_params": self.n_params,
            "mb": self.mb,
            "mb_float_rest": self.mb_float_rest,
            "mb_fp32": self.mb_fp32,
            "bops": self.bops,
            "flops": self.flops,
            "ops": self.ops,
            "qmacs": self.qmacs,
            "ops_quant": self.ops_quant,
            "binary_share": self.binary_share,
        }
        if per_layer:
            d["layers"] = [asdict(layer) for layer in self.layers]
        return d


def _macs(m: nn.Module, out: torch.Tensor) -> int:
    if isinstance(m, nn.Linear):
        return out.numel() * m.in_features
    k = 1
    for s in m.kernel_size:  # type: ignore[union-attr]
        k *= s
    return out.numel() * (m.in_channels // m.groups) * k  # type: ignore[operator]


def _is_binary_mac(m: nn.Module, assume_binary: bool) -> bool:
    return isinstance(m, BinaryMixin) and (assume_binary or (m.binarize_input and m.binarize_weight))


@torch.no_grad()
def complexity(
    model: nn.Module,
    input_size: Sequence[int] = (3, 224, 224),
    *,
    assume_binary: bool = False,
) -> ComplexityReport:
    """Count parameters, BOPs, FLOPs and OPs of ``model`` for one image of ``input_size`` (C, H, W).

    Runs one forward pass on a zero input of batch 1, in eval mode under ``no_grad``, on the device and dtype of the
    model's first parameter. The model is left as it was: its train/eval mode is restored and in-place latent-weight
    clamps (:class:`~onebit.layers.BinaryMixin` ``latent_clip``) are suspended during the pass.

    Args:
        model: any module; binary layers are recognised as :class:`~onebit.layers.BinaryMixin`.
        input_size: input shape without the batch dimension.
        assume_binary: count every binary layer's weight and MACs as binary whatever its ``binarize_input`` /
            ``binarize_weight`` switches (the deployed cost of a stage-1 model).

    Returns:
        A :class:`ComplexityReport` (MACs per image; the batch size is divided out).
    """
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32

    rows: dict[nn.Module, LayerComplexity] = {}
    for name, m in model.named_modules():
        own = list(m.parameters(recurse=False))
        if not own and not isinstance(m, _MAC_LAYERS):
            continue
        binary = _is_binary_mac(m, assume_binary)
        row = LayerComplexity(name, type(m).__name__, "binary" if binary else "real")
        for p_name, p in m.named_parameters(recurse=False):
            if _is_binary_weight(m, p_name, assume_binary):
                row.params_binary += p.numel()
            else:
                row.params_real += p.numel()
        rows[m] = row

    def hook(m: nn.Module, args, out) -> None:
        rows[m].macs += _macs(m, out)
        rows[m].calls += 1

    handles = [m.register_forward_hook(hook) for m in rows if isinstance(m, _MAC_LAYERS)]
    clips = {m: m.latent_clip for m in model.modules() if isinstance(m, BinaryMixin)}
    was_training = model.training
    try:
        for m in clips:
            m.latent_clip = None  # counting must not clamp the caller's latent weights in place
        model.eval()
        model(torch.zeros(1, *input_size, device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        for m, clip in clips.items():
            m.latent_clip = clip
        model.train(was_training)

    # Totals from named_parameters (deduplicated), so shared parameters count once.
    n_binary = n_real = real_bits = 0
    owners = dict(model.named_modules())
    for p_name, p in model.named_parameters():
        owner_name, _, leaf = p_name.rpartition(".")
        bits = parameter_bits(owners[owner_name], leaf, assume_binary)
        if bits == 1:
            n_binary += p.numel()
        else:
            n_real += p.numel()
            real_bits += bits * p.numel()
    layers = list(rows.values())
    bops = sum(r.macs for r in layers if r.kind == "binary")
    flops = sum(r.macs for r in layers if r.kind == "real")
    qmacs = sum(r.macs for m, r in rows.items() if r.kind == "real" and getattr(m, "quantizes_weight", False))
    return ComplexityReport(tuple(input_size), n_binary, n_real, bops, flops, layers, real_bits, qmacs)


def parameter_bits(owner: nn.Module, leaf: str, assume_binary: bool = False) -> int:
    """Bits a parameter takes in the deployed model: 1 for a binary latent weight, ``weight_bits`` for the weight
    of a quantised layer with integer codes (``quantizes_weight``), 32 for everything else."""
    if leaf != "weight":
        return 32
    if isinstance(owner, BinaryMixin) and (assume_binary or owner.binarize_weight):
        return 1
    if getattr(owner, "quantizes_weight", False):
        return int(owner.weight_bits)
    return 32


def _is_binary_weight(m: nn.Module, p_name: str, assume_binary: bool) -> bool:
    return parameter_bits(m, p_name, assume_binary) == 1


def format_table(report: ComplexityReport, per_layer: bool = False, title: str | None = None):
    """A ``rich.table.Table`` of the totals, or of every layer followed by the totals (``per_layer=True``).

    Print it with ``rich.console.Console().print(format_table(report))``.
    """
    from rich.table import Table

    size = "x".join(map(str, report.input_size))
    if not per_layer:
        table = Table(title=title or f"Complexity at {size}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for label, value in (
            ("params (binary)", f"{report.n_binary:,}"),
            ("params (real)", f"{report.n_real:,}"),
            (
                "#Param (MB, 1-bit binary + fp32)" if not report.qmacs else "#Param (MB, 1-bit binary + quantised)",
                f"{report.mb:.2f}",
            ),
            ("size all fp32 (MB)", f"{report.mb_fp32:.2f}"),
            ("BOPs", f"{report.bops:.4g}"),
            ("FLOPs", f"{report.flops:.4g}"),
            ("OPs (BOPs/64 + FLOPs)", f"{report.ops:.4g}"),
            *((("OPs after quantisation (QOPs/8)", f"{report.ops_quant:.4g}"),) if report.qmacs else ()),
            ("binarized share of MACs", f"{100 * report.binary_share:.2f} %"),
        ):
            table.add_row(label, value)
        return table
    table = Table(title=title or f"Complexity per layer at {size}")
    for col, justify in (
        ("layer", "left"),
        ("type", "left"),
        ("kind", "left"),
        ("binary params", "right"),
        ("real params", "right"),
        ("MACs", "right"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in report.layers:
        table.add_row(r.name or "(root)", r.type, r.kind, f"{r.params_binary:,}", f"{r.params_real:,}", f"{r.macs:,}")
    table.add_section()
    table.add_row(
        "total",
        "",
        "",
        f"{report.n_binary:,}",
        f"{report.n_real:,}",
        f"BOPs {report.bops:.4g} / FLOPs {report.flops:.4g} / OPs {report.ops:.4g}",
    )
    return table


def quantized_size_mib(model: nn.Module) -> float:
    """#Param (MB) in the papers' convention (``docs/official-code.md``, *Model size*) with quantised weights at their
    bit width.

    Binary latent weights count 1 bit, the weights of quantised layers their weight bits, every other parameter
    (biases, BN affine, PReLU, shifts, λ) 32 bits; buffers (BN statistics, clip values) and the per-group
    min/max/scale of the codes are not counted. Mebibytes (2^20 bytes).
    """
    owners = dict(model.named_modules())
    total = 0
    for name, p in model.named_parameters():
        owner, _, leaf = name.rpartition(".")
        total += p.numel() * parameter_bits(owners[owner], leaf)
    return total / 8 / 2**20
