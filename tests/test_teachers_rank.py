"""Teacher choice by knowledge complexity (BNext §4.1, §7.3, Tables 8 and 9): the KC column of Table 8, the rule of
``rank_teachers`` against Table 9 for every BNext size, and ``onebit teachers rank``."""

from __future__ import annotations

import json
import math

import pytest

from onebit.cli import main
from onebit.distill import knowledge_complexity, rank_teachers
from onebit.distill.bnext_tables import BNEXT_STUDENTS, BNEXT_TABLE8
from onebit.distill.complexity import DEFAULT_HEADROOM, StudentProfile, resolve_student, teacher_family, teacher_group

B0, B2, B4 = "EfficientNet-B0", "EfficientNet-B2", "EfficientNet-B4"
CNXT = "ConvNext-T"

#: BNext Table 9: strong teacher and assistant group per student.
TABLE9 = {
    "bnext_18": ("ResNet-34", []),
    "bnext_tiny": (B2, [B0]),
    "bnext_small": (B2, [B0]),
    "bnext_middle": (B4, [B0, B2]),
    "bnext_large": (CNXT, [B0, B4, CNXT]),
}

#: Table 9 rows whose assistant group the rule does not derive, and why (also in docs/teachers.md). BNext-L's strong
#: teacher is derived; its group is §5.1's candidate group [B0, B2, B4, ConvNext-T] (with include_strong) of which
#: Table 9 keeps B0, B4, ConvNext-T: B2 is on the Pareto front and within budget, so dropping it is not a matter of KC
#: or accuracy; neither is repeating the strong teacher as the last assistant (include_strong) for L but not for M.
NOT_DERIVED = {"bnext_large": "drops EfficientNet-B2 from the candidate group; repeats the strong teacher"}

#: Table 8 prints KC to three decimals; ResNet-34's 1.4876 is printed 1.487 (truncated), the nine others round.
TRUNCATED = {"ResNet-34"}


def _group(student, **kw) -> tuple[str, list[str]]:
    strong, assistants = teacher_group(rank_teachers(BNEXT_TABLE8, student, **kw))
    assert strong is not None
    return strong["name"], [r["name"] for r in assistants]


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_table8_kc_column_reproduced_to_the_printed_digits() -> None:
    for t in BNEXT_TABLE8:
        kc = knowledge_complexity(t["params_millions"], t["accuracy"])
        if t["name"] in TRUNCATED:
            assert math.floor(kc * 1000) / 1000 == t["kc_printed"], t["name"]
        else:
            assert round(kc, 3) == t["kc_printed"], t["name"]
    assert len(BNEXT_TABLE8) == 10


def test_table8_pareto_front() -> None:
    rows = {r["name"]: r for r in rank_teachers(BNEXT_TABLE8)}
    assert {n for n, r in rows.items() if not r["pareto"]} == {
        "ResNet-34",
        "ResNet-50",
        "ResNet-101",
        "ResNext101-32x8D",
    }
    assert rows["ResNet-34"]["reason"] == "dominated by EfficientNet-B0"
    assert rows["ResNext101-32x8D"]["reason"] == "dominated by ConvNext-T"
    # no student: no budget, the whole front; strong = its most accurate member, no longer the most complex teacher
    assert _group(None) == ("ConvNext-B", [B0, B2, B4, CNXT, "ConvNext-S"])
    assert [r["rank"] for r in rank_teachers(BNEXT_TABLE8)] == list(range(1, 11))


@pytest.mark.parametrize("student", list(TABLE9))
def test_table9_strong_teacher_for_every_bnext_size(student: str) -> None:
    assert _group(student)[0] == TABLE9[student][0]


@pytest.mark.parametrize("student", [s for s in TABLE9 if s not in NOT_DERIVED])
def test_table9_assistant_groups_where_derivable(student: str) -> None:
    assert _group(student) == TABLE9[student]


def test_bnext_large_group_is_the_candidate_group_not_table9() -> None:
    strong, assistants = _group("bnext_large")
    assert (strong, assistants) == (CNXT, [B0, B2, B4])
    candidates = _group("bnext_large", include_strong=True)[1]
    assert candidates == [B0, B2, B4, CNXT]  # §5.1: "[EfficientNet-(B0-B2-B4), ConvNext-Tiny]"
    paper = TABLE9["bnext_large"][1]
    assert [n for n in candidates if n in paper] == paper  # Table 9 keeps a subsequence, in the same order
    assert set(candidates) - set(paper) == {B2}
    rows = {r["name"]: r for r in rank_teachers(BNEXT_TABLE8, "bnext_large", include_strong=True)}
    assert rows[CNXT]["role"] == "strong, assistant 4" and rows[B2]["role"] == "assistant 2"
    assert rows[B2]["pareto"] and rows[B2]["within_budget"]  # so nothing in KC or accuracy drops it


def test_budget_flags_and_fill_up() -> None:
    rows = {r["name"]: r for r in rank_teachers(BNEXT_TABLE8, "bnext_tiny")}
    # BNext-T's budget (72.36 + 2.5 = 74.86 %) admits no front teacher; the ensemble takes the two least complex
    assert not rows[B0]["within_budget"] and not rows[B2]["within_budget"]
    assert rows[B0]["role"] == "assistant 1" and rows[B2]["role"] == "strong"
    assert rows[B2]["reason"] == "over budget: top-1 > 74.86; taken: 2 needed"
    assert rows[B4]["role"] == "excluded" and rows[B4]["reason"] == "over budget: top-1 > 74.86"
    rows = {r["name"]: r for r in rank_teachers(BNEXT_TABLE8, "bnext_small")}
    assert rows[B0]["within_budget"] and rows[B2]["within_budget"] and not rows[B4]["within_budget"]
    assert rows[B2]["reason"] == ""
    # BNext-18: ResNets only (fair comparison), standard KD: one teacher, the least complex ResNet
    rows = {r["name"]: r for r in rank_teachers(BNEXT_TABLE8, "bnext_18")}
    assert rows["ResNet-34"]["pareto"] and rows["ResNet-34"]["role"] == "strong"
    assert rows[B0]["reason"] == "family efficientnet, not resnet" and not rows[B0]["pareto"]
    assert _group("bnext_18", family="any") == (B0, [])
    assert _group("bnext_18", min_teachers=2) == ("ResNet-50", ["ResNet-34"])


def test_headroom_window() -> None:
    """Table 9's strong teachers come out for any headroom in [1.95, 3.09) top-1 points (BNext-L's bounds)."""
    for headroom in (1.95, DEFAULT_HEADROOM, 3.08):
        assert all(_group(s, headroom=headroom)[0] == TABLE9[s][0] for s in TABLE9), headroom
    assert _group("bnext_large", headroom=1.9)[0] == B4
    assert _group("bnext_large", headroom=3.1)[0] == "ConvNext-S"


def test_kc_budget_caps_the_group() -> None:
    assert _group("bnext_large", kc_budget=1.5) == (B4, [B0, B2])
    assert _group(None, kc_budget=1.2) == (B2, [B0])


def test_no_student_keeps_the_kc_order_roles() -> None:
    entries = [
        {"name": "b4", "params_millions": 19.34, "accuracy": 79.26},
        {"name": "b0", "params_millions": 5.29, "accuracy": 0.7753},
        {"name": "b2", "params_millions": 9.11, "accuracy": 78.06},
    ]
    rows = rank_teachers(entries)
    assert [(r["name"], r["role"], r["assistant"]) for r in rows] == [
        ("b0", "assistant 1", 1),
        ("b2", "assistant 2", 2),
        ("b4", "strong", None),
    ]
    assert rank_teachers(entries, include_strong=True)[-1]["role"] == "strong, assistant 3"
    assert rank_teachers(entries[:1], include_strong=True)[0]["role"] == "strong"  # no other assistant: no repeat
    with pytest.raises(ValueError, match="unique"):
        rank_teachers(entries + entries[:1])
    with pytest.raises(ValueError, match="headroom"):
        rank_teachers(entries, 70, headroom=-1)
    with pytest.raises(TypeError):
        rank_teachers(entries, True)


def test_resolve_student_and_family() -> None:
    t = resolve_student("bnext_tiny")
    assert t == resolve_student("BNext-T") == resolve_student("bnext-t")
    assert (t.accuracy, t.kd, t.family, t.min_teachers) == (pytest.approx(0.7236), "ensemble", None, 2)
    assert resolve_student("bnext_18").min_teachers == 1 and resolve_student("BNext-18").family == "resnet"
    assert resolve_student("72.4").accuracy == pytest.approx(0.724) == resolve_student(0.724).accuracy
    assert resolve_student({"accuracy": 80, "kd": "standard"}).min_teachers == 1
    assert resolve_student(None) is None
    assert isinstance(resolve_student(StudentProfile("s", 0.7)), StudentProfile)
    with pytest.raises(ValueError, match="unknown student"):
        resolve_student("bnext_huge")
    with pytest.raises(ValueError, match="kd"):
        StudentProfile("s", 0.7, kd="boost")
    assert set(BNEXT_STUDENTS) == set(TABLE9)
    assert [teacher_family(t["name"]) for t in BNEXT_TABLE8] == [t["family"] for t in BNEXT_TABLE8]
    assert [teacher_family(t["spec"]) for t in BNEXT_TABLE8] == [t["family"] for t in BNEXT_TABLE8]
    assert teacher_family("timm:efficientnet_b2@/w/b2.safetensors") == "efficientnet"
    assert teacher_family("runs/resnet34/") == "resnet"


@pytest.mark.parametrize("student", list(TABLE9))
def test_cli_table8_prints_the_group_and_overrides(capsys, student: str) -> None:
    code, out, err = _run(capsys, "teachers", "rank", "--bnext-table8", "--student", student)
    assert code == 0 and not err
    strong, assistants = _group(student)
    spec = {t["name"]: t["spec"] for t in BNEXT_TABLE8}
    assert f"strong teacher: {strong}" in out
    assert f"assistant group (in order): {', '.join(assistants) or 'none'}" in out
    line = f"stages.0.teachers={spec[strong]}"
    if assistants:
        line += f" stages.0.assistants={','.join(spec[a] for a in assistants)}"
    assert f"overrides: {line}\n" in out
    assert "Pareto" in out and "0.893" in out and "2.053" in out


def test_cli_json_and_numbers_only(capsys) -> None:
    # --acc and --params for every teacher: nothing is built, so names need not be loadable
    args = ["teachers", "rank", "b0", "b2", "b4", "r34", "--student", "bnext_middle", "--json"]
    for name, p, a in (("b0", 5.29, 77.53), ("b2", 9.11, 78.06), ("b4", 19.34, 79.26), ("r34", 21.8, 73.31)):
        args += ["--params", f"{name}={p}", "--acc", f"{name}={a}"]
    code, out, _ = _run(capsys, *args)
    assert code == 0
    got = json.loads(out)
    assert (got["strong"], got["assistants"]) == ("b4", ["b0", "b2"])
    assert got["overrides"] == ["stages.0.teachers=b4", "stages.0.assistants=b0,b2"]
    assert got["accuracy_ceiling"] == pytest.approx(0.8077) and got["min_teachers"] == 2
    r34 = next(r for r in got["teachers"] if r["name"] == "r34")
    assert (r34["pareto"], r34["role"], r34["reason"]) == (False, "excluded", "dominated by b0")


def test_cli_builds_a_teacher_for_its_parameter_count(capsys) -> None:
    code, out, _ = _run(capsys, "teachers", "rank", "resnet_digits", "--acc", "resnet_digits=90", "--json")
    assert code == 0
    row = json.loads(out)["teachers"][0]
    assert row["params_millions"] > 0 and row["role"] == "strong"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give teacher specs, or --bnext-table8"),
        (["--bnext-table8", "--student", "bnext_huge"], "unknown student 'bnext_huge'"),
        (["a", "--acc", "a=x"], "--acc expects NAME=ACC"),
        (["a", "--acc", "b=70", "--params", "a=1"], "not listed: b"),
        (["a", "a"], "listed twice: a"),
        (["a", "--acc", "a=70"], "teacher 'a'"),  # no --params: the model is built, and 'a' is no model
        (["a", "--acc", "a=70", "--params", "a=3", "--student", "bnext_18"], "no teacher proposed"),
        (["--bnext-table8", "--headroom", "-1"], "--headroom"),
        (["--bnext-table8", "--kd", "standard"], "--kd needs --student"),
    ],
)
def test_cli_errors_are_one_line(capsys, argv: list[str], message: str) -> None:
    code, out, err = _run(capsys, "teachers", "rank", *argv)
    assert code == 2 and not out
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
