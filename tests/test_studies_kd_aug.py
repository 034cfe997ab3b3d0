"""`onebit study kd` / `augmentation` end to end on a sliver of the digits: reports, figures, every variant, float
teachers that load as float, and the assistant schedule's switch."""

import json
import re

import pytest
import torch

from onebit.cli import main
from onebit.distill import count_params, load_teacher
from onebit.layers import binary_layers
from onebit.models import create_model
from onebit.models.small import float_resnet_digits
from onebit.studies import STUDIES, run_study
from onebit.studies.kd_aug import AUG_VARIANTS, KD_VARIANTS, TEACHERS

# 32 training images at batch 64: one step per epoch, so the whole module stays within a few seconds per study
TINY = ["data.limit_train=32", "data.limit_val=32", "track_flips=false", "track_dynamics=false"]


@pytest.fixture(scope="module")
def no_run_plots():
    # the per-run plots (plots/*.png of every run directory) are a third of a tiny run's time and not what these
    # tests check; the study's own figures are still drawn
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("onebit.analysis.plots.plot_run", lambda *a, **k: [])
        yield


def _table_labels(md: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^\| ([^|]+) \|", md, flags=re.M)]


@pytest.fixture(scope="module")
def kd_report(tmp_path_factory, no_run_plots):
    tmp = tmp_path_factory.mktemp("kd")
    path = run_study("kd", seeds=1, root=tmp / "runs", docs=tmp / "docs", epochs=2, overrides=TINY)
    return tmp, path


def test_kd_study_writes_report_and_figures(kd_report):
    tmp, path = kd_report
    md = path.read_text()
    assert path == tmp / "docs" / "kd.md"
    for fig in ("val_curves.png", "kd_gain.png", "results.json"):
        assert (tmp / "docs" / "kd" / fig).stat().st_size > 0
    labels = _table_labels(md)
    for label, *_ in KD_VARIANTS:
        assert label in labels
    assert "`onebit study kd --seeds 1 --epochs 2 --override data.limit_train=32" in md
    results = json.loads((tmp / "docs" / "kd" / "results.json").read_text())
    assert {r["variant"] for r in results} == {v[0] for v in KD_VARIANTS}
    # every distilling variant got the teachers of its seed, by role
    assert all(set(r["context"]) == {"weak", "strong"} for r in results)


def test_kd_teachers_are_float_and_reported_as_loaded(kd_report):
    tmp, path = kd_report
    md = path.read_text()
    for role, width in TEACHERS:
        run_dir = tmp / "runs" / "kd" / "teachers" / role / "seed0"
        teacher = load_teacher(run_dir)
        layers = [m for _, m in binary_layers(teacher.model)]
        assert layers and not any(m.binarize_input or m.binarize_weight for m in layers)
        params = count_params(create_model("float_resnet_digits", num_classes=10, width=width, in_chans=3))
        row = next(line for line in md.splitlines() if line.startswith(f"| {role} | `float_resnet_digits`"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2] == f"{params:,}"
        # accuracy re-measured through load_teacher equals the run's own val accuracy: the student sees that model
        assert cells[3] == cells[4]
    weak, strong = (count_params(create_model("float_resnet_digits", width=w, in_chans=3)) for _, w in TEACHERS)
    assert strong > 10 * weak


def test_kd_schedule_switches_from_weak_to_strong(kd_report):
    _, path = kd_report
    md = path.read_text()
    assert "| 1 | weak, strong |" in md and "| 2 | strong, strong |" in md
    cfg = json.loads((path.parent.parent / "runs" / "kd" / "assistant_schedule" / "seed0" / "config.json").read_text())
    stage = cfg["stages"][0]
    assert stage["kd_loss"] == "gap_ensemble_official"
    assert [p.split("/")[-2] for p in stage["assistants"]] == ["weak", "strong"]
    assert stage["teachers"][0].split("/")[-2] == "strong"


def test_augmentation_study_writes_report_and_figures(tmp_path, no_run_plots):
    path = run_study("augmentation", seeds=1, root=tmp_path / "runs", docs=tmp_path / "docs", epochs=1, overrides=TINY)
    md = path.read_text()
    for fig in ("val_curves.png", "aug_delta.png", "results.json"):
        assert (tmp_path / "docs" / "augmentation" / fig).stat().st_size > 0
    labels = _table_labels(md)
    for label, *_ in AUG_VARIANTS:
        assert label in labels
    cfgs = {
        label: json.loads((tmp_path / "runs" / "augmentation" / d.name / "seed0" / "config.json").read_text())["data"]
        for label, *_ in AUG_VARIANTS
        for d in (tmp_path / "runs" / "augmentation").iterdir()
        if d.name == "".join(c if c.isalnum() or c in "-._" else "_" for c in label)
    }
    assert cfgs["RandAugment + MixUp"]["randaugment"] and cfgs["RandAugment + MixUp"]["mixup"] == 0.8
    assert cfgs["repeated augmentation (×3)"]["aug_repeats"] == 3 and cfgs["none"]["mixup"] == 0.0


def test_float_resnet_digits_is_the_binary_net_without_signs():
    torch.manual_seed(0)
    f = float_resnet_digits(width=2, in_chans=3)
    torch.manual_seed(0)
    b = create_model("resnet_digits", family="strong_baseline", width=2, in_chans=3)
    b.load_state_dict(f.state_dict())
    x = torch.randn(4, 3, 16, 16)
    f.eval(), b.eval()
    for _, m in binary_layers(b):
        m.binarize_input = m.binarize_weight = False
    torch.testing.assert_close(f(x), b(x))
    assert f.onebit_spec["name"] == "float_resnet_digits"


def test_cli_lists_the_new_studies_and_rejects_bad_overrides(capsys, tmp_path):
    assert main(["study", "list"]) == 0
    out = capsys.readouterr().out
    assert "kd" in STUDIES and "augmentation" in STUDIES
    assert "kd:" in out and "augmentation:" in out
    code = main(["study", "augmentation", "--seeds", "1", "--runs", str(tmp_path), "--override", "data.nope=1"])
    assert code == 2
    assert "data.nope" in capsys.readouterr().err


@pytest.mark.slow  # a fresh interpreter importing torch: a few seconds for one import-order check
def test_kd_aug_module_imports_on_its_own():
    # onebit.studies imports onebit.studies_kd_aug at its end and the latter builds on the former: either may come
    # first without a circular-import error
    import subprocess
    import sys

    code = (
        "import onebit.studies.kd_aug; from onebit.studies import STUDIES; "
        "assert {'kd', 'augmentation'} <= set(STUDIES)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_digits_stats_lets_randaugment_work_in_pixel_space():
    from onebit.config import DataConfig
    from onebit.data import build_data
    from onebit.train.recipe import build_augment

    plain = build_data(DataConfig(name="digits", channels=3, limit_train=64, limit_val=8), 0)
    cfg = DataConfig(name="digits_stats", channels=3, limit_train=64, limit_val=8, randaugment=True)
    data = build_data(cfg, 0)
    torch.testing.assert_close(data.train.images, plain.train.images)  # same tensors, statistics attached
    mean, std = data.mean[0], data.std[0]
    # the statistics undo the loader's normalisation: pixels back in [0, 1], background exactly 0
    pixels = data.val.images * std + mean
    assert abs(float(pixels.min())) < 1e-5 and float(pixels.max()) <= 1 + 1e-5
    x, y = data.train.images, data.train.labels
    xa, _ = build_augment(cfg, data)(x, y, torch.Generator().manual_seed(0))
    lo, hi = -mean / std, (1 - mean) / std
    assert float(xa.min()) >= lo - 1e-5 and float(xa.max()) <= hi + 1e-5
    assert not torch.equal(xa, x)
