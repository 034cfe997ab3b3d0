import json

import pytest

from onebit.config import ConfigError, RunConfig, apply_overrides, from_dict, load_json, save_json, to_dict, valid_keys
from onebit.recipes import get_recipe, list_recipes


def test_json_round_trip(tmp_path):
    cfg = get_recipe("adambnn_digits")
    apply_overrides(cfg, ["stages.1.optim.betas=0.8,0.99", "model.kwargs.width=8", "stages.0.grad_clip=5"])
    save_json(cfg, tmp_path / "c.json")
    back = load_json(tmp_path / "c.json")
    assert back == cfg
    assert isinstance(back.stages[1].optim.betas, tuple) and back.stages[1].optim.betas == (0.8, 0.99)
    assert json.loads((tmp_path / "c.json").read_text()) == to_dict(cfg)


def test_overrides_by_index_name_and_wildcard():
    cfg = get_recipe("adambnn_digits")
    apply_overrides(
        cfg,
        [
            "stages.step2.epochs=3",
            "stages.0.optim.lr=1e-4",
            "stages.*.optim.weight_decay=-1e-4",
            "data.augment=false",
            "stages.0.grad_clip=none",
            "seed=7",
        ],
    )
    assert cfg.stages[1].epochs == 3 and cfg.stages[0].epochs != 3
    assert cfg.stages[0].optim.lr == 1e-4
    assert all(s.optim.weight_decay == -1e-4 for s in cfg.stages)
    assert cfg.data.augment is False and cfg.stages[0].grad_clip is None and cfg.seed == 7


def test_unknown_key_names_key_and_closest():
    cfg = get_recipe("adambnn_digits")
    with pytest.raises(ConfigError) as e:
        apply_overrides(cfg, ["stages.0.optim.lrr=1"])
    msg = str(e.value)
    assert "'stages.0.optim.lrr'" in msg and "stages.0.optim.lr" in msg
    with pytest.raises(ConfigError, match="data.batch_size"):
        apply_overrides(cfg, ["data.batchsize=3"])
    with pytest.raises(ConfigError, match="no element named 'step3'"):
        apply_overrides(cfg, ["stages.step3.epochs=1"])
    with pytest.raises(ConfigError, match="out of range"):
        apply_overrides(cfg, ["stages.5.epochs=1"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(cfg, ["epochs"])


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("stages.0.epochs=abc", "expects int"),
        ("stages.0.epochs=1.5", "expects int"),
        ("data.augment=maybe", "bool"),
        ("stages.0.optim.lr=fast", "expects float"),
        ("stages.0.optim.betas=0.9", "expects 2 values"),
    ],
)
def test_wrong_type_names_expected_type(item, expected):
    with pytest.raises(ConfigError, match=expected) as e:
        apply_overrides(get_recipe("adambnn_digits"), [item])
    assert item.split("=")[0] in str(e.value)


def test_from_dict_rejects_unknown_and_mistyped(tmp_path):
    d = to_dict(RunConfig())
    d["stages"][0]["optim"]["momentun"] = 0.9
    with pytest.raises(ConfigError, match="momentun.*did you mean.*momentum"):
        from_dict(d)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: not valid JSON"):
        load_json(tmp_path / "bad.json")


def test_valid_keys_lists_nested_fields():
    keys = valid_keys(get_recipe("adambnn_digits"))
    assert "stages.1.optim.weight_decay" in keys and "data.image_size" in keys


def test_every_recipe_and_smoke_builds():
    for name in list_recipes():
        for smoke in (False, True):
            cfg = get_recipe(name, smoke=smoke)
            assert cfg.stages and all(s.epochs > 0 for s in cfg.stages)
