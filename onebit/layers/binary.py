"""Binary convolution and linear layers that subclass (and reduce to) their float counterparts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from onebit.binarize import build_binarizer, clamp_latent_
from onebit.config import TrainingPath
from onebit.layers.fused import lean_binary_conv2d, lean_spec

__all__ = ["BinaryConv2d", "BinaryLinear", "BinaryMixin", "is_binary_layer"]


class BinaryMixin:
    """Shared switches of :class:`BinaryConv2d` and :class:`BinaryLinear`.

    ``binarize_input`` / ``binarize_weight`` select independently what a training stage binarizes (AdamBNN's step 1
    binarizes activations only, step 2 both). With both off the layer *is* its float parent.
    ``latent_clip`` clamps the latent weight in place to [-latent_clip, latent_clip] before a forward
    (``latent_clip_when="train"``: only in training, as BNext-T/S/M/L; ``"always"``: also in eval, as BNext-18).

    ``training_path`` selects how a forward that autograd records is computed: ``"lean"`` (default; the fused
    Function of :mod:`onebit.layers.fused` for the configurations it expresses, else the binarizer modules: the
    same values, bit for bit), ``"module"`` (the binarizer modules always) or ``"reference"`` (the official code's
    composed arithmetic, see :meth:`onebit.binarize.Binarizer.reference`). Set it for a whole model with
    :func:`onebit.layers.set_training_path`, which checks the value (the forward does not).
    """

    input_binarizer: nn.Module
    weight_binarizer: nn.Module
    weight: nn.Parameter
    training_path: TrainingPath = "lean"

    def _init_binary(
        self,
        input_binarizer,
        weight_binarizer,
        binarize_input: bool,
        binarize_weight: bool,
        latent_clip: float | None,
        latent_clip_when: str,
    ) -> None:
        if latent_clip_when not in ("train", "always"):
            raise ValueError(f"latent_clip_when must be 'train' or 'always', got {latent_clip_when!r}")
        self.input_binarizer = build_binarizer(input_binarizer)
        self.weight_binarizer = build_binarizer(weight_binarizer)
        self.binarize_input = bool(binarize_input)
        self.binarize_weight = bool(binarize_weight)
        self.latent_clip = latent_clip
        self.latent_clip_when = latent_clip_when

    def binary_input(self, x: Tensor) -> Tensor:
        return self.input_binarizer(x) if self.binarize_input else x

    def _clamp_latent(self) -> None:
        if self.latent_clip is not None and (self.training or self.latent_clip_when == "always"):  # type: ignore[attr-defined]
            clamp_latent_(self.weight, self.latent_clip)

    def binary_weight(self) -> Tensor:
        """The weight as used by the forward (binarized, scaled) — also used by metrics and exporters."""
        self._clamp_latent()
        return self.weight_binarizer(self.weight) if self.binarize_weight else self.weight

    def _operands(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(binarized input, binarized weight) on the module path or, for ``"reference"``, the official arithmetic."""
        if self.training_path != "reference":
            return self.binary_input(x), self.binary_weight()
        self._clamp_latent()
        x = self.input_binarizer.reference(x) if self.binarize_input else x
        w = self.weight_binarizer.reference(self.weight) if self.binarize_weight else self.weight
        return x, w

    def _binary_repr(self) -> str:
        return f"binarize_input={self.binarize_input}, binarize_weight={self.binarize_weight}"


class BinaryConv2d(BinaryMixin, nn.Conv2d):
    """``nn.Conv2d`` over a binarized input with a binarized weight: conv(B_x(x), B_w(W)).

    Args:
        input_binarizer: name in ``BINARIZERS``, a module, or ``None`` (identity). Default ``"ste_sign"``.
        weight_binarizer: likewise; default ``"scaled_sign"`` (alpha * sign(W)).
        binarize_input, binarize_weight: switch each half on/off (stages of a recipe flip these).
        pad_value: value of the spatial padding around the *binarized* input. ``0.0`` is what the official code
            computes (padded taps contribute 0); ``-1.0``/``1.0`` keep the input strictly two-valued, as packed
            XNOR kernels need. Applies only to ``padding_mode="zeros"`` with a binarized input.
        latent_clip, latent_clip_when: see :class:`BinaryMixin`.

    Parameter names equal ``nn.Conv2d``'s (``weight``, ``bias``), so float checkpoints load unchanged.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = False,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
        *,
        input_binarizer="ste_sign",
        weight_binarizer="scaled_sign",
        binarize_input: bool = True,
        binarize_weight: bool = True,
        pad_value: float = 0.0,
        latent_clip: float | None = None,
        latent_clip_when: str = "train",
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, device, dtype
        )
        self._init_binary(
            input_binarizer, weight_binarizer, binarize_input, binarize_weight, latent_clip, latent_clip_when
        )
        if pad_value != 0.0 and padding_mode != "zeros":
            raise ValueError("pad_value applies to padding_mode='zeros' only")
        if isinstance(self.padding, str) and pad_value != 0.0:
            raise ValueError("pad_value needs explicit integer padding, not 'same'/'valid'")
        self.pad_value = float(pad_value)

    def forward(self, x: Tensor, shift: Tensor | None = None) -> Tensor:
        """conv(B_x(x + shift), B_w(W)) (+ bias). ``shift``: an optional [1, C, 1, 1] learnable shift applied before
        the input binarizer (``LearnableBias.bias``), fused into the lean Function (see ``fused.shift_and_conv``)."""
        if self.training_path == "lean" and torch.is_grad_enabled():
            spec = lean_spec(self)
            if spec is not None:
                self._clamp_latent()
                temperature = getattr(self.weight_binarizer, "temperature", None) if self.binarize_weight else None
                return lean_binary_conv2d(x, shift, self.weight, self.bias, spec, temperature)
        if shift is not None:
            x = x + shift
        x, w = self._operands(x)
        if self.pad_value != 0.0 and self.binarize_input and any(self.padding):
            ph, pw = self.padding  # type: ignore[misc]
            x = F.pad(x, (pw, pw, ph, ph), value=self.pad_value)
            return F.conv2d(x, w, self.bias, self.stride, 0, self.dilation, self.groups)
        return self._conv_forward(x, w, self.bias)

    def forward_binarized(self, xb: Tensor) -> Tensor:
        """conv(xb, B_w(W)) for an input the caller already binarized with this layer's input binarizer (on the
        ``"reference"`` path, with its ``reference`` form): the official ReActNet block binarizes once for its two
        1x1 convs. The weight is binarized as ``forward`` would on the current path; zero padding only."""
        if self.pad_value != 0.0 and any(self.padding):  # type: ignore[arg-type]
            raise ValueError("forward_binarized pads with zeros; this layer has a pad_value")
        if self.training_path == "reference":
            self._clamp_latent()
            w = self.weight_binarizer.reference(self.weight) if self.binarize_weight else self.weight
        else:
            w = self.binary_weight()
        return self._conv_forward(xb, w, self.bias)

    def extra_repr(self) -> str:
        pad = f", pad_value={self.pad_value}" if self.pad_value else ""
        return f"{super().extra_repr()}, {self._binary_repr()}{pad}"


class BinaryLinear(BinaryMixin, nn.Linear):
    """``nn.Linear`` over a binarized input with a binarized weight: linear(B_x(x), B_w(W)) (+ bias)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        input_binarizer="ste_sign",
        weight_binarizer="scaled_sign",
        binarize_input: bool = True,
        binarize_weight: bool = True,
        latent_clip: float | None = None,
        latent_clip_when: str = "train",
    ) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self._init_binary(
            input_binarizer, weight_binarizer, binarize_input, binarize_weight, latent_clip, latent_clip_when
        )

    def forward(self, x: Tensor) -> Tensor:
        # no fused Function for linear layers: "lean" runs the binarizer modules (their STEs already save bool masks)
        x, w = self._operands(x)
        return F.linear(x, w, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._binary_repr()}"


def is_binary_layer(m: nn.Module) -> bool:
    return isinstance(m, BinaryMixin)


@torch.no_grad()
def _copy_float_(dst: nn.Module, src: nn.Module) -> None:
    dst.weight.copy_(src.weight)
    if getattr(src, "bias", None) is not None and dst.bias is not None:
        dst.bias.copy_(src.bias)
