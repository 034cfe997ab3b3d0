"""Official-checkpoint import/export (onebit.models.official), parametrized over every registered layout."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

import onebit.models  # noqa: F401  (registers the families' layouts)
from onebit.models.official import (
    LAYOUTS,
    OfficialCheckpointError,
    OfficialLayout,
    compact_keys,
    export_official,
    load_official,
    official_keys,
)

KEYS_DIR = Path(__file__).resolve().parents[2] / "shared/spec/official-keys"
PACKAGED_DIR = Path(onebit.models.official.__file__).with_name("official_keys")
# Models above this size need GBs and minutes on a 2-core machine (BNext-S/M/L): run with -m slow.
BIG = 50_000_000

needs_keys = pytest.mark.skipif(not KEYS_DIR.is_dir(), reason=f"official key files not found at {KEYS_DIR}")


def _layout_params() -> list:
    params = []
    for name in LAYOUTS.list():
        compact = official_keys(LAYOUTS.get(name).keys or name)
        big = compact is not None and compact["param_counts"]["n_total"] > BIG
        params.append(pytest.param(name, marks=[pytest.mark.slow] if big else [], id=name))
    return params


LAYOUT_PARAMS = _layout_params()


def _entries(layout: str) -> list[dict]:
    lay = LAYOUTS.get(layout)
    path = KEYS_DIR / f"{lay.keys or lay.name}.keys.json"
    if not path.is_file():
        pytest.skip(f"no keys file {path}")
    return json.loads(path.read_text())["state_dict"]


def random_official_state(entries: list[dict], seed: int = 0) -> dict[str, torch.Tensor]:
    """A plausible random official state dict: positive BN variances, lambda in [0, 1], temperatures 0.9**3."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for e in entries:
        shape, cat = tuple(e["shape"]), e["category"]
        if e["dtype"] == "int64":
            out[e["key"]] = torch.randint(0, 1000, shape, generator=g, dtype=torch.int64)
            continue
        if cat in ("bn_running_var", "bn_weight"):
            t = 0.75 + 0.5 * torch.rand(shape, generator=g)
        elif cat == "temperature":
            t = torch.full(shape, 0.9**3)
        elif cat == "recoupling_scale":
            t = torch.rand(shape, generator=g)
        elif cat == "prelu_weight":
            t = 0.5 * torch.rand(shape, generator=g)
        elif cat in ("stem_conv_weight", "se_conv_weight", "downsample_conv_weight"):
            t = torch.randn(shape, generator=g) / max(1, torch.Size(shape[1:]).numel()) ** 0.5
        else:  # latent binary weights, shifts, biases, fc
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


@needs_keys
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


@needs_keys
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
@needs_keys
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


@needs_keys
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


@needs_keys
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


@needs_keys
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
@needs_keys
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


@needs_keys
def test_step1_layout_keeps_weights_real(states):
    from onebit.layers import binary_layers

    model = load_official("reactnet_a_step1", states["reactnet_a_step1"])
    layers = [m for _, m in binary_layers(model)]
    assert layers and all(m.binarize_input and not m.binarize_weight for m in layers)


# ------------------------------------------------------------------------------------- engine paths without a family
@needs_keys
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
@needs_keys
@pytest.mark.parametrize("path", sorted(KEYS_DIR.glob("*.keys.json")), ids=lambda p: p.name.split(".")[0])
def test_packaged_keys_match_shared(path):
    expected = compact_keys(json.loads(path.read_text()))
    packaged = PACKAGED_DIR / f"{expected['model']}.json"
    assert packaged.is_file(), f"{packaged} missing: run write_compact_keys"
    assert json.loads(packaged.read_text()) == expected
    assert official_keys(expected["model"]) == expected


@needs_keys
def test_no_stale_packaged_keys():
    shared = {p.name.split(".")[0] for p in KEYS_DIR.glob("*.keys.json")}
    assert {p.stem for p in PACKAGED_DIR.glob("*.json")} == shared


def test_every_layout_has_packaged_keys():
    for name in LAYOUTS.list():
        lay = LAYOUTS.get(name)
        assert official_keys(lay.keys or lay.name) is not None, name


@needs_keys
def test_wrong_layout_error_suggests_the_right_one(states):
    with pytest.raises(OfficialCheckpointError, match=r"binary_3x3\.weights.*exactly those of layout.*'reactnet_a'"):
        load_official("reactnet_a_reactnet_repo_layout", states["reactnet_a"])
