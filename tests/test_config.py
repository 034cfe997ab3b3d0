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
    ("stages.0.init_from", config.StageConfig, "init_from", config.InitFrom),
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


# ------------------------------------------------------------------------------------------------- numeric domains
NAN, INF = float("nan"), float("inf")

#: (dotted key in a RunConfig, rejected values, accepted edge values) of every config field with a Range
DOMAINS = [
    ("model.num_classes", [0, -1], [1]),
    ("data.image_size", [0, -8], [1]),
    ("data.batch_size", [0, -5], [1]),
    ("data.eval_batch_size", [0, -1], [1]),
    ("data.val_fraction", [0.0, 1.0, -0.1, NAN], [0.5]),
    ("data.split_seed", [-1], [0]),
    ("data.limit_train", [-1], [0]),
    ("data.limit_val", [-1], [0]),
    ("data.num_workers", [-1], [0]),
    ("data.channels", [-1], [0, 3]),
    ("data.val_resize", [0], [1]),
    ("data.randaugment_m", [-0.5, 10.5, NAN], [0.0, 10.0]),
    ("data.randaugment_mstd", [-0.1, INF], [0.0]),
    ("data.randaugment_n", [-1], [0]),
    ("data.mixup", [-0.2, NAN], [0.0, 0.8]),
    ("data.cutmix", [-1.0, INF], [0.0, 1.0]),
    ("data.aug_repeats", [0, -3], [1, 3]),
    ("stages.0.optim.lr", [NAN, INF, -1.0, -1e-9], [0.0, 1e-3]),
    ("stages.0.optim.weight_decay", [NAN, INF, -INF], [-1e-4, 0.0, 5e-6]),  # negative: AdamBNN Table 1
    ("stages.0.optim.other_weight_decay", [NAN], [-1e-4]),
    ("stages.0.optim.betas", [(0.9, 1.0), (-0.1, 0.999), (0.9, NAN)], [(0.0, 0.999)]),
    ("stages.0.optim.eps", [-1e-8, NAN], [0.0]),
    ("stages.0.optim.momentum", [-0.9, INF], [0.0]),
    ("stages.0.schedule.warmup_epochs", [-1], [0]),
    ("stages.0.schedule.warmup_lr_init", [-1e-5, NAN], [0.0]),
    ("stages.0.schedule.lr_min", [-1e-7, INF], [0.0]),
    ("stages.0.epochs", [0, -1], [1]),
    ("stages.0.grad_clip", [0.0, -1.0, NAN, INF], [None, 5.0]),
    ("stages.0.label_smoothing", [1.0, -0.1, NAN], [0.0, 0.1]),
    ("stages.0.temperature", [-1.0, NAN, INF], [None, 0.0, 1.0]),
    ("stages.0.temperature_decay", [0.0, -0.5, NAN], [0.3, 1.0]),
    ("stages.0.label_weight", [-0.5, NAN], [0.0]),
    ("stages.0.teacher_mean", [[0.1, NAN]], [[0.5, -0.2]]),
    ("stages.0.teacher_std", [[0.2, 0.0], [-1.0]], [[0.2]]),
    ("seed", [-1], [0, 7]),
    ("threads", [-1], [0]),
    ("log_every", [-1], [0, 5]),
    ("checkpoint_every", [-1], [0]),
    ("keep_epochs", [[0], [1, -2]], [[], [1, 3]]),
]
BAD = [(key, v) for key, bad, _ in DOMAINS for v in bad]
GOOD = [(key, v) for key, _, good in DOMAINS for v in good]


def _owner(cfg, key):
    """The config object holding the field of dotted ``key``, and the field's name."""
    parent, _, name = key.rpartition(".")
    return (_get(cfg, parent) if parent else cfg), name


def _text(value):
    """``value`` as an override string."""
    if value is None:
        return "none"
    return ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def test_domain_table_covers_every_ranged_field():
    classes = [config.ModelConfig, DataConfig, OptimConfig, ScheduleConfig, config.StageConfig, RunConfig]
    found = {
        (cls, name)
        for cls in classes
        for name, tp in typing.get_type_hints(cls, include_extras=True).items()
        if "Range(" in repr(tp)
    }
    cfg = RunConfig()
    listed = {(type(_owner(cfg, key)[0]), _owner(cfg, key)[1]) for key, _, _ in DOMAINS}
    assert found == listed


@pytest.mark.parametrize(("key", "value"), BAD, ids=[f"{k}={_text(v)}" for k, v in BAD])
def test_out_of_domain_rejected_by_override(key, value):
    cfg = RunConfig()
    before = to_dict(cfg)
    with pytest.raises(ConfigError, match="must be") as e:
        apply_overrides(cfg, [f"{key}={_text(value)}"])
    assert str(e.value).startswith(key)  # the dotted key (list fields: key.<index>)
    assert to_dict(cfg) == before


@pytest.mark.parametrize(("key", "value"), BAD, ids=[f"{k}={_text(v)}" for k, v in BAD])
def test_out_of_domain_rejected_by_from_dict_and_load_json(key, value, tmp_path):
    d = to_dict(RunConfig())
    _set_in_dict(d, key, list(value) if isinstance(value, tuple) else value)
    with pytest.raises(ConfigError, match="must be") as e:
        from_dict(d)
    assert str(e.value).startswith(key)
    (tmp_path / "c.json").write_text(json.dumps(d))  # NaN/Infinity: Python's JSON extension, read back as such
    with pytest.raises(ConfigError, match=f"c.json: {key}.* must be"):
        load_json(tmp_path / "c.json")


@pytest.mark.parametrize(("key", "value"), BAD, ids=[f"{k}={_text(v)}" for k, v in BAD])
def test_out_of_domain_rejected_by_construction_and_assignment(key, value):
    obj, name = _owner(RunConfig(), key)
    cls = type(obj)
    with pytest.raises(ConfigError, match="must be") as e:
        cls(**{name: value})
    assert str(e.value).startswith(f"{cls.__name__}.{name}")
    before = getattr(obj, name)
    with pytest.raises(ConfigError, match="must be"):
        setattr(obj, name, value)
    assert getattr(obj, name) == before
    with pytest.raises(ConfigError, match="must be"):
        dataclasses.replace(obj, **{name: value})


@pytest.mark.parametrize(("key", "value"), GOOD, ids=[f"{k}={_text(v)}" for k, v in GOOD])
def test_in_domain_edge_values_accepted_and_round_trip(key, value, tmp_path):
    cfg = apply_overrides(RunConfig(), [f"{key}={_text(value)}"])
    assert _get(cfg, key) == value
    obj, name = _owner(RunConfig(), key)
    setattr(obj, name, value)
    assert getattr(type(obj)(**{name: value}), name) == value
    save_json(cfg, tmp_path / "c.json")
    assert load_json(tmp_path / "c.json") == cfg


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("data.batch_size=0", "data.batch_size must be >= 1, got 0"),
        ("stages.*.optim.lr=nan", "stages.*.optim.lr must be a finite number >= 0, got nan"),
        ("stages.0.optim.lr=-1", "stages.0.optim.lr must be >= 0, got -1.0"),
        ("stages.1.epochs=0", "stages.1.epochs must be >= 1, got 0"),
        ("stages.0.grad_clip=inf", "stages.0.grad_clip must be a finite number > 0, got inf"),
        ("stages.0.label_smoothing=1", "stages.0.label_smoothing must be in [0, 1), got 1.0"),
        ("data.randaugment_m=11", "data.randaugment_m must be in [0, 10], got 11.0"),
        ("stages.0.optim.betas=0.9,1", "stages.0.optim.betas.1 must be in [0, 1), got 1.0"),
        ("stages.0.optim.weight_decay=-inf", "stages.0.optim.weight_decay must be a finite number, got -inf"),
    ],
)
def test_domain_messages(item, message):
    with pytest.raises(ConfigError) as e:
        apply_overrides(get_recipe("adambnn_digits"), [item])
    assert str(e.value) == message


def test_domain_messages_of_construction_and_types():
    with pytest.raises(ConfigError) as e:
        DataConfig(batch_size=0)
    assert str(e.value) == "DataConfig.batch_size must be >= 1, got 0"
    cfg = RunConfig()
    for bad in ("64", True, 64.0, None):  # no coercion outside overrides and JSON
        with pytest.raises(ConfigError, match=r"DataConfig.batch_size expects int, got"):
            cfg.data.batch_size = bad
    with pytest.raises(ConfigError, match=r"OptimConfig.lr expects float, got '1e-3'"):
        cfg.stages[0].optim.lr = "1e-3"
    cfg.stages[0].optim.lr = 1  # an int is a float
    with pytest.raises(ConfigError, match=r"RunConfig.keep_epochs.1 must be >= 1, got 0"):
        cfg.keep_epochs = [1, 0]
    with pytest.raises(ConfigError, match="stages.0.grad_clip expects float | None, got 'abc'"):
        apply_overrides(cfg, ["stages.0.grad_clip=abc"])
    with pytest.raises(ConfigError, match=r"stages.0.grad_clip must be > 0, got -1.0"):  # not "expects float | None"
        apply_overrides(cfg, ["stages.0.grad_clip=-1"])


def test_every_recipe_and_study_config_is_in_domain():
    import onebit.studies  # noqa: F401  (registers the studies)
    from onebit.studies.common import STUDIES
    from onebit.studies.kd_aug import teacher_config

    configs = [get_recipe(name, smoke=smoke) for name in list_recipes() for smoke in (False, True)]
    # the KD variants name their teachers' run dirs by role (bnext.py also by KC rank)
    teachers = {"weak": "runs/weak", "strong": "runs/strong", "kc_low": "runs/weak", "kc_high": "runs/strong"}
    for study in STUDIES.values():
        for epochs in (1, study.epochs):
            configs += [v.make(**teachers) if study.prepare else v.make() for v in study.variants(epochs)]
    configs += [teacher_config(1, 16)]
    assert len(configs) > 2 * len(list_recipes())
    for cfg in configs:
        assert from_dict(to_dict(cfg)) == cfg  # every field re-checked on the way back
