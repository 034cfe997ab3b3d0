"""Every recipe's smoke variant runs end to end (no data set on disk) and every recipe has its header."""

import io

import pytest
from rich.console import Console

from onebit.config import OptimConfig
from onebit.recipes import get_recipe, list_recipes, recipe_header
from onebit.recipes._strategies import one_step, two_step
from onebit.train import run


@pytest.mark.parametrize("name", list_recipes())
def test_recipe_header_and_smoke_run(name, tmp_path):
    header = recipe_header(name)
    assert "Command:" in header and "Cost:" in header and "Expected:" in header
    cfg = get_recipe(name, smoke=True)
    cfg.threads = 1
    res = run(cfg, out_dir=tmp_path / "run", console=Console(file=io.StringIO()))
    assert [s["name"] for s in res.summary["stages"]] == [s.name for s in cfg.stages]
    assert all(0.0 <= s["val_top1"] <= 1.0 for s in res.summary["stages"])


def test_strategies():
    opt = OptimConfig(lr=1e-3, weight_decay=123.0)
    babw = two_step("BABW", (3, 4), opt, weight_decay=(5e-6, 0.0))
    assert [(s.binarize_activations, s.binarize_weights) for s in babw] == [(True, False), (True, True)]
    assert [s.optim.weight_decay for s in babw] == [5e-6, 0.0] and [s.epochs for s in babw] == [3, 4]
    assert [s.init for s in babw] == ["scratch", "previous"] and opt.weight_decay == 123.0
    bwba = two_step("bwba", (1, 1), opt)
    assert [(s.binarize_activations, s.binarize_weights) for s in bwba] == [(False, True), (True, True)]
    one = one_step(5, opt)
    assert len(one) == 1 and one[0].binarize_activations and one[0].binarize_weights
    with pytest.raises(ValueError, match="BABW"):
        two_step("ABAB", (1, 1), opt)
