import dataclasses
import json
import typing

import pytest

from onebit import config
from onebit.config import (
    AmpMode,
    ConfigError,
    DataConfig,
    Interpolation,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    ScheduleName,
    SchedulePer,
    TrainAugment,
    TrainingPath,
    WdMode,
    apply_overrides,
    from_dict,
    load_json,
    save_json,
    to_dict,
    valid_keys,
)
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


# ------------------------------------------------------------------------------------------------- closed choices
#: (dotted key in a RunConfig, owning class, field, Literal alias) of every Literal-typed config field
CHOICES = [
    ("training_path", RunConfig, "training_path", TrainingPath),
    ("amp", RunConfig, "amp", AmpMode),
    ("data.interpolation", DataConfig, "interpolation", Interpolation),
    ("data.train_augment", DataConfig, "train_augment", TrainAugment),
    ("stages.0.optim.wd_mode", OptimConfig, "wd_mode", WdMode),
    ("stages.0.schedule.name", ScheduleConfig, "name", ScheduleName),
    ("stages.0.schedule.per", ScheduleConfig, "per", SchedulePer),
]
CHOICE_IDS = [c[0] for c in CHOICES]


def _get(cfg, key):
    """The value at dotted ``key`` of a config or of its dict."""
    for part in key.split("."):
        cfg = cfg[int(part)] if part.isdigit() else cfg[part] if isinstance(cfg, dict) else getattr(cfg, part)
    return cfg


def _set_in_dict(d, key, value):
    *path, last = key.split(".")
    for part in path:
        d = d[int(part)] if part.isdigit() else d[part]
    d[last] = value


def test_choice_table_covers_every_literal_field():
    classes = [config.ModelConfig, DataConfig, OptimConfig, ScheduleConfig, config.StageConfig, RunConfig]
    found = {
        (cls, name)
        for cls in classes
        for name, tp in typing.get_type_hints(cls).items()
        if typing.get_origin(tp) is typing.Literal
    }
    assert found == {(cls, name) for _, cls, name, _ in CHOICES}
    for _, cls, name, alias in CHOICES:
        assert typing.get_type_hints(cls)[name] == alias


def _assert_names_key_and_choices(err, key, alias):
    msg = str(err.value)
    assert key in msg and "'fast'" in msg
    assert all(repr(c) in msg for c in typing.get_args(alias))


@pytest.mark.parametrize(("key", "cls", "name", "alias"), CHOICES, ids=CHOICE_IDS)
def test_choice_rejected_by_override(key, cls, name, alias):
    cfg = RunConfig()
    before = _get(cfg, key)
    with pytest.raises(ConfigError) as e:
        apply_overrides(cfg, [f"{key}=fast"])
    _assert_names_key_and_choices(e, key, alias)
    assert _get(cfg, key) == before
    near = typing.get_args(alias)[-1] + "x"  # a typo gets the closest choice
    with pytest.raises(ConfigError, match=f"did you mean {typing.get_args(alias)[-1]!r}"):
        apply_overrides(cfg, [f"{key}={near}"])


@pytest.mark.parametrize(("key", "cls", "name", "alias"), CHOICES, ids=CHOICE_IDS)
def test_choice_rejected_by_from_dict_and_load_json(key, cls, name, alias, tmp_path):
    d = to_dict(RunConfig())
    _set_in_dict(d, key, "fast")
    with pytest.raises(ConfigError) as e:
        from_dict(d)
    _assert_names_key_and_choices(e, key, alias)
    (tmp_path / "c.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="c.json: ") as e:
        load_json(tmp_path / "c.json")
    _assert_names_key_and_choices(e, key, alias)


@pytest.mark.parametrize(("key", "cls", "name", "alias"), CHOICES, ids=CHOICE_IDS)
def test_choice_rejected_by_construction_and_assignment(key, cls, name, alias):
    with pytest.raises(ConfigError) as e:
        cls(**{name: "fast"})
    _assert_names_key_and_choices(e, f"{cls.__name__}.{name}", alias)
    obj = cls()
    before = getattr(obj, name)
    with pytest.raises(ConfigError) as e:
        setattr(obj, name, "fast")
    _assert_names_key_and_choices(e, name, alias)
    assert getattr(obj, name) == before
    with pytest.raises(ConfigError):
        dataclasses.replace(obj, **{name: "fast"})
    with pytest.raises(ConfigError):  # no coercion outside overrides: a non-str is not a choice
        setattr(obj, name, 1)


@pytest.mark.parametrize(("key", "cls", "name", "alias"), CHOICES, ids=CHOICE_IDS)
def test_every_choice_accepted_and_round_trips(key, cls, name, alias, tmp_path):
    for choice in typing.get_args(alias):
        cfg = apply_overrides(RunConfig(), [f"{key}={choice}"])
        assert _get(cfg, key) == choice
        assert getattr(cls(**{name: choice}), name) == choice
        d = to_dict(cfg)
        assert _get(d, key) == choice  # a plain string in the JSON
        assert from_dict(d) == cfg
        save_json(cfg, tmp_path / "c.json")
        assert load_json(tmp_path / "c.json") == cfg
        assert json.loads((tmp_path / "c.json").read_text()) == d


def test_every_recipe_holds_valid_choices():
    for name in list_recipes():
        cfg = get_recipe(name)
        assert from_dict(to_dict(cfg)) == cfg  # every Literal field re-checked on the way back


def test_derived_choice_tuples_equal_the_literals():
    from onebit.augment import AUGMENT_KINDS
    from onebit.data.folder import RESAMPLE
    from onebit.layers import TRAINING_PATHS
    from onebit.train.loop import AMP_MODES

    assert typing.get_args(TrainingPath) == TRAINING_PATHS
    assert typing.get_args(TrainAugment) == AUGMENT_KINDS
    assert tuple(AMP_MODES) == typing.get_args(AmpMode)
    assert tuple(RESAMPLE) == typing.get_args(Interpolation)
