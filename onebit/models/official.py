"""Import and export of the papers' released checkpoints (layouts of ``spec/official-keys``).

A family file declares each official layout it can read with :func:`register_layout`; the engine
(:func:`load_official`, :func:`export_official`) is shared by all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from onebit.registry import Registry


@dataclass(frozen=True)
class OfficialLayout:
    """How one official state-dict layout maps onto one of our models.

    Attributes:
        name: stem of the keys file (``bnext_tiny``, ``reactnet_a_step1``, ...).
        build: builds our (randomly initialised) model for this layout.
        key_map: official key -> our state-dict key (``None``: known-unused, dropped on import).
        to_ours: converts an official tensor to our shape/layout (default identity), given the official key.
        to_official: the inverse of ``to_ours`` for export, given the official key.
        description: one line for listings.
    """

    name: str
    build: Callable[[], nn.Module]
    key_map: Callable[[str], str | None]
    to_ours: Callable[[str, Tensor], Tensor] | None = None
    to_official: Callable[[str, Tensor], Tensor] | None = None
    description: str = ""


LAYOUTS: Registry[OfficialLayout] = Registry("official layout")


def register_layout(layout: OfficialLayout) -> OfficialLayout:
    LAYOUTS.register(layout.name, layout)
    return layout
