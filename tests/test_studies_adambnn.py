"""AdamBNN's optimizer studies (adam-vs-sgd, weight-decay, order, adaptive): their smoke reports carry the claims
and rows the papers' tables call for, and the measures behind the verdicts match hand-computed references."""

import json
import math

import pytest

from onebit.studies import STUDIES
from onebit.studies.adambnn import (
    ADAM_LRS,
    SGD_LRS,
    all_of,
    close_verdict,
    increasing,
    sweep_robustness,
)
from onebit.studies.common import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED

NAMES = ("adam-vs-sgd", "weight-decay", "order", "adaptive")


def _claims(docs, name):
    return json.loads((docs / name / "claims.json").read_text())["claims"]


@pytest.mark.parametrize(
    "name,sources,n_claims",
    [
        ("adam-vs-sgd", {"AdamBNN Fig. 8", "AdamBNN §4.3.1, Fig. 8"}, 4),
        ("weight-decay", {"AdamBNN Table 1"}, 9),
        ("order", {"AdamBNN Table 4", "AdamBNN Table 1"}, 2),
        ("adaptive", {"AdamBNN Table 5"}, 6),
    ],
)
def test_smoke_report_has_the_papers_claims(smoke_study, name, sources, n_claims):
    path, docs, _ = smoke_study(name)
    claims = _claims(docs, name)
    assert len(claims) == n_claims
    assert {c["source"] for c in claims} == sources
    assert all(c["verdict"] == INCONCLUSIVE for c in claims)  # one seed: no spread to judge by
    assert "nan" not in path.read_text().lower().replace("nano", "")


def test_weight_decay_has_paper_scaled_and_two_step_rows(smoke_study):
    path, docs, _ = smoke_study("weight-decay")
    labels = {v.label for v in STUDIES["weight-decay"].variants(1)}
    assert {"one-step wd=1e-05", "one-step wd=5e-06", "one-step wd=0", "one-step wd=-0.0001"} <= labels
    assert {"two-step wd=0.1/0", "two-step wd=0.05/0", "one-step wd=-1"} <= labels
    results = json.loads((docs / "weight-decay" / "results.json").read_text())
    two = [r for r in results if r["variant"].startswith("two-step")]
    assert two and all(len(r["stages"]) == 2 for r in two)
    md = path.read_text()
    assert md.count("in step 1, 0 in step 2 |") == 2


def test_two_step_variants_split_the_one_step_epochs():
    """weight-decay's two-step runs train as many epochs in total as its one-step runs; order's one-step run as
    many as a two-step run."""
    vs = {v.label: v.make() for v in STUDIES["weight-decay"].variants(4)}
    assert [s.epochs for s in vs["two-step wd=0.05/0"].stages] == [2, 2]
    assert vs["two-step wd=0.05/0"].stages[0].optim.weight_decay == pytest.approx(0.05)
    assert vs["two-step wd=0.05/0"].stages[1].optim.weight_decay == 0.0
    assert not vs["two-step wd=0.05/0"].stages[0].binarize_weights
    assert vs["one-step wd=0"].stages[0].epochs == 4
    order = {v.label: v.make() for v in STUDIES["order"].variants(5)}
    total = {k: sum(s.epochs for s in c.stages) for k, c in order.items()}
    assert set(total.values()) == {10}


def test_adam_and_sgd_grids_have_equal_log_width():
    width = [math.log10(max(g) / min(g)) for g in (ADAM_LRS, SGD_LRS)]
    assert width[0] == pytest.approx(width[1])
    assert min(ADAM_LRS) < 2.5e-3 < max(ADAM_LRS) and min(SGD_LRS) < 0.1 < max(SGD_LRS)


def test_sweep_robustness_against_a_hand_computed_case():
    nan = float("nan")
    acc = {0.3: [nan, 50.0], 0.01: [80.0, 70.0], 0.1: [90.0, 60.0]}  # unsorted keys; seed 0 diverged at 0.3
    r = sweep_robustness(acc, chance=10.0)
    assert r["mean"] == pytest.approx([(80 + 90 + 10) / 3, (70 + 60 + 50) / 3])
    assert r["drop"] == pytest.approx([80.0, 20.0])
    assert r["best_lr"] == [0.1, 0.01]


def test_close_verdict_is_an_equivalence_test():
    a = [60.0, 61.0, 62.0]  # mean 61, sd 1
    assert close_verdict(a, [60.5, 61.5, 60.5], margin=2.0) == REPRODUCED  # |d|=0.17, 2·SE=1.15 -> 1.32 <= 2
    assert close_verdict(a, [50.0, 51.0, 52.0], margin=2.0) == NOT_REPRODUCED  # |d|=10, far outside
    assert close_verdict(a, [58.0, 59.0, 60.0], margin=2.0) == INCONCLUSIVE  # |d|=2: the interval straddles 2
    assert close_verdict(a, [61.0], margin=2.0) == INCONCLUSIVE


def test_all_of_and_increasing():
    assert all_of([REPRODUCED, REPRODUCED]) == REPRODUCED
    assert all_of([REPRODUCED, INCONCLUSIVE]) == INCONCLUSIVE
    assert all_of([INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED]) == NOT_REPRODUCED
    assert all_of([]) == INCONCLUSIVE
    assert increasing([1e-7, 2e-4, 1.6e-3, 2.3e-3])
    assert not increasing([1.0, 1.0, 2.0])
    assert not increasing([1.0, float("nan"), 2.0])
