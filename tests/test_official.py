"""Official-checkpoint import/export (onebit.models.official), parametrized over every registered layout.

The official layouts come from the key lists shipped in ``onebit/models/official_keys/`` (every key, shape and dtype
of the released checkpoints), so these tests run in a plain clone: the state dicts are synthetic, with exactly the
official keys and shapes (see ``docs/official-code.md``, *Checkpoint layouts*).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch

import onebit.models  # noqa: F401  (registers the families' layouts)
from onebit.models.official import (
    COMPACT_COLUMNS,
    LAYOUTS,
    OfficialCheckpointError,
    OfficialLayout,
    compact_keys,
    export_official,
    load_official,
    official_keys,
)

PACKAGED_DIR = Path(onebit.models.official.__file__).with_name("official_keys")
# Models above this size need GBs and minutes on a 2-core machine (BNext-S/M/L): run with -m slow.
BIG = 50_000_000


def _layout_params() -> list:
    params = []
    for name in LAYOUTS.list():
        compact = official_keys(LAYOUTS.get(name).keys or name)
        big = compact is not None and compact["param_counts"]["n_total"] > BIG
        params.append(pytest.param(name, marks=[pytest.mark.slow] if big else [], id=name))
    return params


LAYOUT_PARAMS = _layout_params()


def _entries(layout: str) -> list[dict]:
    """The official state-dict entries (``key``, ``shape``, ``dtype``, ``kind``, ``note``) of a layout."""
    lay = LAYOUTS.get(layout)
    compact = official_keys(lay.keys or lay.name)
    assert compact is not None, f"no packaged key list for layout {layout}"
    return [dict(zip(compact["columns"], row)) for row in compact["state_dict"]]


def _value_kind(key: str, shape: tuple[int, ...]) -> str:
    """What an official tensor holds, read off its key and shape (the official modules' attribute names)."""
    owner, _, last = key.rpartition(".")
    owner = owner.rpartition(".")[2]
    if last == "running_var":
        return "positive"
    if last == "temperature":
        return "temperature"
    if last == "scale" and len(shape) == 4:  # the recoupling lambda [1, C, 1, 1] (fc.scale of the quantised fc is [])
        return "recoupling_scale"
    if last == "weight" and len(shape) == 1:  # PReLU slopes (prelu*, activation*) or BN affine weights
        return "prelu_weight" if owner.startswith(("prelu", "activation")) else "positive"
    if last == "weight" and len(shape) == 4 and "binary" not in key:  # stem, SE and downsample convs
        return "real_conv_weight"
    return "other"  # latent binary weights, shifts, biases, fc, quantiser clip buffers


def random_official_state(entries: list[dict], seed: int = 0) -> dict[str, torch.Tensor]:
    """A plausible random official state dict: positive BN variances, lambda in [0, 1], temperatures 0.9**3."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for e in entries:
        shape = tuple(e["shape"])
        if e["dtype"] == "int64":
            out[e["key"]] = torch.randint(0, 1000, shape, generator=g, dtype=torch.int64)
            continue
        kind = _value_kind(e["key"], shape)
        if kind == "positive":
            t = 0.75 + 0.5 * torch.rand(shape, generator=g)
        elif kind == "temperature":
            t = torch.full(shape, 0.9**3)
        elif kind == "recoupling_scale":
            t = torch.rand(shape, generator=g)
        elif kind == "prelu_weight":
            t = 0.5 * torch.rand(shape, generator=g)
        elif kind == "real_conv_weight":
            t = torch.randn(shape, generator=g) / max(1, torch.Size(shape[1:]).numel()) ** 0.5
        else:
            t = 0.1 * torch.randn(shape, generator=g)
        out[e["key"]] = t.to(torch.float32)
    return out


class _States(dict):
    """Random official state dicts, made on first use per layout and shared by the tests of this module."""

    def __missing__(self, layout: str) -> dict[str, torch.Tensor]:
        self[layout] = random_official_state(_entries(layout), seed=len(self))
        return self[layout]


@pytest.fixture(scope="module")
def states() -> _States:
    return _States()


def _num_classes(state: dict[str, torch.Tensor]) -> int:
    return state["fc.weight"].shape[0] if "fc.weight" in state else 1000


def _logits(model: torch.nn.Module, size: int = 32) -> torch.Tensor:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        return model.double()(x)


# ------------------------------------------------------------------------------------------------ every layout
def test_reactnet_layouts_registered():
    assert {"reactnet_a", "reactnet_a_step1", "reactnet_a_reactnet_repo_layout"} <= set(LAYOUTS.list())


@pytest.mark.parametrize("layout", LAYOUT_PARAMS)
def test_import_export_roundtrip_and_forward(layout, states):
    state = states[layout]
    model = load_official(layout, state)
    assert not model.training
    exported = export_official(model, layout)
    assert list(exported) == list(state)
    for k, v in state.items():
        assert exported[k].dtype == v.dtype and exported[k].shape == v.shape, k
        assert torch.equal(exported[k], v), k
    logits = _logits(model)
    assert logits.shape == (2, _num_classes(state))
    assert torch.isfinite(logits).all()
    # Export from the float64 model (cast back to the official float32) and import again: the same values (checked
    # above), so this is also the repeated import, and the float64 logits must be identical.
    again = load_official(layout, export_official(model, layout))
    assert torch.equal(_logits(again), logits)


@pytest.mark.parametrize("layout", LAYOUT_PARAMS)
def test_errors_name_the_key(layout, states):
    state = states[layout]
    key = next(k for k, v in state.items() if v.dim() >= 1 and v.is_floating_point())

    bad = dict(state)
    bad[key] = torch.zeros(*state[key].shape, 2)
    with pytest.raises(OfficialCheckpointError, match=rf"{layout}.*{key}.*shape"):
        load_official(layout, bad)

    missing = {k: v for k, v in state.items() if k != key}
    with pytest.raises(OfficialCheckpointError, match=rf"{layout}.*missing.*{key}"):
        load_official(layout, missing)

    extra = {**state, key + "_extra": state[key]}
    with pytest.raises(OfficialCheckpointError, match=rf"{layout}.*{key}_extra.*closest.*{key}"):
        load_official(layout, extra)


# ------------------------------------------------------------------------------------------ containers and files
@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda sd: {"module." + k: v for k, v in sd.items()}, id="module-prefix"),
        pytest.param(lambda sd: {"epoch": 3, "state_dict": {"module." + k: v for k, v in sd.items()}}, id="ckpt"),
        pytest.param(lambda sd: {"model": sd}, id="model-key"),
    ],
)
def test_containers(wrap, states):
    state = states["reactnet_a"]
    model = load_official("reactnet_a", wrap(state))
    assert all(torch.equal(v, state[k]) for k, v in export_official(model, "reactnet_a").items())


@pytest.mark.parametrize("suffix", [".pth.tar", ".pt", ".safetensors"])
def test_files(suffix, states, tmp_path):
    state = states["reactnet_a"]
    path = tmp_path / f"ckpt{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"epoch": 1, "state_dict": {"module." + k: v for k, v in state.items()}}, path)
    source = str(path) if suffix == ".pt" else path  # str and Path both accepted
    exported = export_official(load_official("reactnet_a", source), "reactnet_a")
    assert all(torch.equal(v, state[k]) for k, v in exported.items())


def test_pickled_objects_are_refused(states, tmp_path):
    path = tmp_path / "ckpt.pth.tar"
    torch.save({"state_dict": states["reactnet_a"], "args": argparse.Namespace(lr=1.0)}, path)
    with pytest.raises(OfficialCheckpointError, match="weights_only"):
        load_official("reactnet_a", path)


def test_unreadable_inputs(tmp_path):
    with pytest.raises(OfficialCheckpointError, match="not found"):
        load_official("reactnet_a", tmp_path / "nope.pth")
    with pytest.raises(OfficialCheckpointError, match="not tensors"):
        load_official("reactnet_a", {"epoch": 3, "fc.weight": torch.zeros(2)})
    with pytest.raises(KeyError, match="reactnet_a"):
        load_official("reactnet_b", {})


@pytest.fixture(scope="module")
def checkpoint_files(tmp_path_factory) -> Path:
    """Valid files of the smallest layout (reactnet_resnet18, 47 MB): safetensors, zip .pth.tar, legacy .pth."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    state = export_official(LAYOUTS.get("reactnet_resnet18").build(), "reactnet_resnet18")
    save_file(state, str(folder / "ckpt.safetensors"))
    torch.save({"epoch": 1, "state_dict": state}, folder / "ckpt.pth.tar")
    torch.save(state, folder / "ckpt.pth", _use_new_zipfile_serialization=False)
    return folder


CHECKPOINT_NAMES = ["ckpt.safetensors", "ckpt.pth.tar", "ckpt.pth"]


@pytest.mark.parametrize("name", CHECKPOINT_NAMES)
def test_valid_checkpoint_files_load(name, checkpoint_files):
    model = load_official("reactnet_resnet18", checkpoint_files / name)
    assert not model.training


@pytest.mark.parametrize("cut", ["half", "all_but_one_byte", "first_100_bytes", "empty", "garbage"])
@pytest.mark.parametrize("name", CHECKPOINT_NAMES)
def test_truncated_or_corrupt_files_are_one_line_naming_the_file(name, cut, checkpoint_files, tmp_path):
    data = (checkpoint_files / name).read_bytes()
    bad = tmp_path / f"bad_{name}"  # the same suffix: read the same way
    bad.write_bytes(
        {
            "half": data[: len(data) // 2],
            "all_but_one_byte": data[:-1],
            "first_100_bytes": data[:100],
            "empty": b"",
            "garbage": bytes(range(256)) * 8,
        }[cut]
    )
    with pytest.raises(OfficialCheckpointError) as e:
        load_official("reactnet_resnet18", bad)
    msg = str(e.value)
    assert msg.startswith(f"{bad}: not a readable checkpoint (") and msg.endswith(")"), msg
    assert "\n" not in msg and "\x1b" not in msg and len(msg) < 300, msg


def test_pickled_code_refusal_is_one_line_naming_file_and_global(states, tmp_path):
    path = tmp_path / "ckpt.pth.tar"
    torch.save({"state_dict": states["reactnet_a"], "args": argparse.Namespace(lr=1.0)}, path)
    with pytest.raises(OfficialCheckpointError) as e:
        load_official("reactnet_a", path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: cannot read it with torch.load(weights_only=True)") and "\n" not in msg
    assert "argparse.Namespace" in msg and "if you trust the file" in msg


def test_non_strict_ignores_unexpected(states):
    state = states["reactnet_a"]
    with pytest.warns(UserWarning, match="optimizer_thing"):
        model = load_official("reactnet_a", {**state, "optimizer_thing": torch.zeros(1)}, strict=False)
    assert list(export_official(model, "reactnet_a")) == list(state)
    with pytest.raises(OfficialCheckpointError, match="missing"):
        load_official("reactnet_a", {k: v for k, v in state.items() if k != "fc.bias"}, strict=False)


def test_export_refuses_a_foreign_model():
    with pytest.raises(OfficialCheckpointError, match="reactnet_a.*is this a reactnet_a model"):
        export_official(torch.nn.Linear(2, 2), "reactnet_a")


# ------------------------------------------------------------------------------------------------ ReActNet specifics
def test_reactnet_repo_flat_layout_equals_4d_layout(states):
    state4 = states["reactnet_a"]
    flat_keys = [e["key"] for e in _entries("reactnet_a_reactnet_repo_layout")]
    flat = {}
    for k, v in state4.items():
        fk = k[: -len("weight")] + "weights" if (k[: -len("weight")] + "weights") in flat_keys else k
        flat[fk] = v.reshape(-1, 1) if fk != k else v
    assert list(flat) == flat_keys
    model_flat = load_official("reactnet_a_reactnet_repo_layout", flat)
    assert torch.equal(_logits(model_flat), _logits(load_official("reactnet_a", state4)))
    exported = export_official(model_flat, "reactnet_a_reactnet_repo_layout")
    assert all(torch.equal(v, flat[k]) for k, v in exported.items())
    # The same model exports to the 4-D layout as well (the two layouts only differ in storage).
    assert all(torch.equal(v, state4[k]) for k, v in export_official(model_flat.float(), "reactnet_a").items())


def test_step1_layout_keeps_weights_real(states):
    from onebit.layers import binary_layers

    model = load_official("reactnet_a_step1", states["reactnet_a_step1"])
    layers = [m for _, m in binary_layers(model)]
    assert layers and all(m.binarize_input and not m.binarize_weight for m in layers)


# ------------------------------------------------------------------------------------- engine paths without a family
def test_unused_keys_and_model_only(states, monkeypatch):
    """A layout that drops an official key (key_map -> None) and leaves one of our keys to the model."""
    dropped = "feature.0.bn1.num_batches_tracked"
    lay = OfficialLayout(
        "test_dropping",
        build=LAYOUTS.get("reactnet_a").build,
        key_map=lambda k: None if k == dropped else k,
        keys="reactnet_a",
        model_only=("feature.0.bn1.num_batches_*",),
    )
    monkeypatch.setitem(LAYOUTS._items, lay.name, lay)
    state = states["reactnet_a"]
    model = load_official(lay.name, state)
    exported = export_official(model, lay.name)
    assert list(exported) == list(state)
    assert all(torch.equal(v, state[k]) for k, v in exported.items())  # the dropped value was kept for export
    assert int(model.state_dict()[dropped]) == 0  # our own buffer kept its built value

    strict_lay = OfficialLayout("test_uncovered", build=lay.build, key_map=lay.key_map, keys="reactnet_a")
    monkeypatch.setitem(LAYOUTS._items, strict_lay.name, strict_lay)
    with pytest.raises(OfficialCheckpointError, match=f"test_uncovered.*get no value.*{dropped}"):
        load_official(strict_lay.name, state)


# ------------------------------------------------------------------------------------------- packaged key lists
PACKAGED = sorted(PACKAGED_DIR.glob("*.json"))


@pytest.mark.parametrize("path", PACKAGED, ids=lambda p: p.stem)
def test_packaged_keys_are_canonical_and_consistent(path):
    """Each shipped key list is in the form :func:`compact_keys` writes, and its counts agree with its own rows."""
    packaged = json.loads(path.read_text())
    assert packaged["model"] == path.stem
    assert packaged["columns"] == list(COMPACT_COLUMNS)
    entries = [dict(zip(packaged["columns"], row)) for row in packaged["state_dict"]]
    full = {k: v for k, v in packaged.items() if k not in ("columns", "state_dict")}
    assert compact_keys({**full, "state_dict": entries}) == packaged
    assert official_keys(path.stem) == packaged

    keys = [e["key"] for e in entries]
    assert len(set(keys)) == len(keys) and not any(k.startswith("module.") for k in keys)
    assert {e["kind"] for e in entries} <= {"param", "buffer"}
    assert {e["note"] for e in entries} <= {"", "unused_in_forward", "no_effect_on_forward"}
    assert all(e["dtype"] == "int64" for e in entries if e["key"].endswith("num_batches_tracked"))

    counts, ops = packaged["param_counts"], packaged["ops"]
    n_params = sum(math.prod(e["shape"]) for e in entries if e["kind"] == "param")
    assert counts["n_total"] == n_params == counts["n_binary"] + counts["n_nonbinary"]
    binary_keys = [e for e in entries if e["kind"] == "param" and len(e["shape"]) in (2, 4) and "binary" in e["key"]]
    if counts["n_binary"]:  # the step-1 layouts keep their binary-to-be convs real
        assert counts["n_binary"] == sum(math.prod(e["shape"]) for e in binary_keys)
    mib = (counts["n_binary"] + 32 * counts["n_nonbinary"]) / 8 / 2**20  # docs/official-code.md, *Model size*
    assert counts["mb_1bit_binary_fp32_rest_MiB"] == pytest.approx(mib, rel=1e-12)
    assert ops["OPs"] == pytest.approx(ops["BOPs"] / 64 + ops["FLOPs_nonbinary_macs"], rel=1e-12)


def test_no_stale_packaged_keys():
    used = {LAYOUTS.get(n).keys or n for n in LAYOUTS.list()}
    assert {p.stem for p in PACKAGED} == used


def test_every_layout_has_packaged_keys():
    for name in LAYOUTS.list():
        lay = LAYOUTS.get(name)
        assert official_keys(lay.keys or lay.name) is not None, name


def test_wrong_layout_error_suggests_the_right_one(states):
    with pytest.raises(OfficialCheckpointError, match=r"binary_3x3\.weights.*exactly those of layout.*'reactnet_a'"):
        load_official("reactnet_a_reactnet_repo_layout", states["reactnet_a"])
