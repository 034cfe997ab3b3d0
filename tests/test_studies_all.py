"""Every study at its smoke budget: the report is written by the code and opens with a filled claims table; the
index gathers every claim; `onebit study all|index|list` work; the committed reports follow the same format."""

import json
import re
from pathlib import Path

import pytest

from onebit.cli import main
from onebit.studies import STUDIES
from onebit.studies.common import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    VERDICTS,
    Claim,
    compare,
    holds,
    write_index,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "studies"


def _claim_rows(md: str) -> list[list[str]]:
    """The cells of the claims table: the first table after the title, under `## Claims`."""
    lines = md.splitlines()
    assert lines[0].startswith("# Study `"), lines[0]
    assert lines[2] == "## Claims", lines[:4]
    rows = []
    for line in lines[4:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    assert rows[0][:2] == ["#", "claim (source)"] and set(rows[1][0]) <= {"-"}
    return rows[2:]


def _check_claims(md: str) -> None:
    rows = _claim_rows(md)
    assert rows, "no claims"
    for i, cells in enumerate(rows, 1):
        assert len(cells) == 6 and cells[0] == str(i)
        assert all(cells) and not any(re.search(r"\bnan\b", c, flags=re.I) for c in cells), cells
        verdict = cells[4].strip("*")
        assert verdict in VERDICTS, cells
        if verdict != REPRODUCED:
            assert cells[5] != "—", cells
    assert re.search(r"Written by `onebit study [^`]+` at commit `[^`]+` from runs trained at `[^`]+`", md)


@pytest.mark.parametrize("name", list(STUDIES))
def test_smoke_report_opens_with_a_filled_claims_table(smoke_study, name):
    path, docs, _ = smoke_study(name)
    md = path.read_text()
    _check_claims(md)
    assert f"`onebit study {name} --smoke" in md
    rec = json.loads((docs / name / "claims.json").read_text())
    assert rec["study"] == name and rec["smoke"] and len(rec["claims"]) == len(_claim_rows(md))
    # the body has its results table too, every row filled (no missing numbers)
    body = md.split("**Setup.**", 1)[1]
    for line in body.splitlines():
        if line.startswith("|") and not set(line) <= set("|-: "):
            assert "| |" not in line.replace("  ", " ") and not re.search(r"\bnan\b", line, flags=re.I), line
    results = json.loads((docs / name / "results.json").read_text())
    assert {r["variant"] for r in results} == {v.label for v in STUDIES[name].variants(1)}


def test_study_all_reuses_runs_and_writes_the_index(smoke_study, monkeypatch, capsys):
    names = ["adaptive", "order"]
    for n in names:
        _, docs, runs = smoke_study(n)
    before = {p: p.stat().st_mtime_ns for p in runs.rglob("checkpoints") if p.is_dir()}
    (docs / "adaptive" / "stale.png").write_bytes(b"from an older report")
    monkeypatch.setattr("onebit.studies.common.STUDIES", {n: STUDIES[n] for n in names})
    assert main(["study", "all", "--smoke", "--runs", str(runs), "--docs", str(docs)]) == 0
    after = {p: p.stat().st_mtime_ns for p in runs.rglob("checkpoints") if p.is_dir()}
    assert before == after  # finished runs were reused, not retrained
    assert not (docs / "adaptive" / "stale.png").exists()  # a report's folder holds only what it wrote
    index = (docs / "README.md").read_text()
    for n in names:
        rec = json.loads((docs / n / "claims.json").read_text())
        for c in rec["claims"]:
            assert f"{c['claim']} ({c['source']})".replace("|", "/") in index
    assert re.search(r"Totals: \d+ reproduced, \d+ not reproduced, \d+ inconclusive of \d+ claims", index)
    assert main(["study", "index", "--docs", str(docs)]) == 0
    assert main(["study", "list"]) == 0
    assert "adaptive" in capsys.readouterr().out


def test_unknown_study_is_a_user_error(capsys):
    assert main(["study", "adaptiv", "--smoke"]) == 2
    assert "did you mean adaptive" in capsys.readouterr().err


def test_compare_judges_by_the_standard_error():
    assert compare([10, 11, 12], [1, 2, 3]) == REPRODUCED
    assert compare([10, 11, 12], [1, 2, 3], expect="<") == NOT_REPRODUCED
    assert compare([1, 5, 9], [2, 4, 8]) == INCONCLUSIVE  # 5.0 vs 4.67: far inside the spread
    assert compare([10], [1, 2, 3]) == INCONCLUSIVE  # one seed: no spread to judge by
    assert compare([10, float("nan"), 12], [1, 2, None]) == REPRODUCED  # diverged runs are left out
    with pytest.raises(ValueError):
        compare([1, 2], [3, 4], expect=">=")


def test_holds_needs_every_seed():
    assert holds([True, True, True]) == REPRODUCED
    assert holds([False, False]) == NOT_REPRODUCED
    assert holds([True, False, True]) == INCONCLUSIVE
    assert holds([True]) == INCONCLUSIVE


def test_a_claim_that_is_not_reproduced_must_say_why():
    with pytest.raises(ValueError, match="needs a line of why"):
        Claim("AdamBNN Table 5", "Adam is first", "61.49", "80 ± 1", NOT_REPRODUCED)
    with pytest.raises(ValueError, match="verdict must be one of"):
        Claim("AdamBNN Table 5", "Adam is first", "61.49", "80 ± 1", "maybe")


def test_index_of_the_committed_reports(tmp_path):
    """The reports in docs/studies open with the claims table, and the committed index lists every claim."""
    reports = sorted(p for p in DOCS.glob("*.md") if p.name != "README.md")
    assert {p.stem for p in reports} == set(STUDIES)
    for p in reports:
        _check_claims(p.read_text())
        assert (DOCS / p.stem / "claims.json").is_file()
    committed = (DOCS / "README.md").read_text()
    rebuilt = write_index(_copy_claims(tmp_path)).read_text()
    assert committed == rebuilt


def _copy_claims(tmp: Path) -> Path:
    for p in DOCS.glob("*/claims.json"):
        (tmp / p.parent.name).mkdir()
        (tmp / p.parent.name / "claims.json").write_text(p.read_text())
    return tmp
