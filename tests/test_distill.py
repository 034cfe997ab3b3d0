"""Distillation: KD losses against hand-computed values, frozen teachers, the assistant schedule, KC and the CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from onebit.distill import (
    KD_LOSSES,
    AssistantSchedule,
    DistillationTask,
    Teacher,
    count_params,
    knowledge_complexity,
    load_teacher,
    rank_teachers,
)

# 2 samples, 3 classes, 2 teachers ([assistant, strong] order as in the official code)
S = np.array([[1.0, 2.0, 0.5], [0.2, -1.0, 1.5]])
T1 = np.array([[0.5, 1.5, 0.0], [1.0, 0.0, 2.0]])
T2 = np.array([[2.0, 1.0, -1.0], [0.0, 0.3, 1.0]])


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float32)


def _soft_ce_rows(s: np.ndarray, t: np.ndarray) -> np.ndarray:
    # −Σ_c softmax(t)_c log softmax(s)_c, one value per sample
    return -(_softmax(t) * np.log(_softmax(s))).sum(axis=1)


def _kl_rows(t: np.ndarray, s: np.ndarray) -> np.ndarray:
    # KL(p_t ‖ p_s) = Σ_c p_t (log p_t − log p_s), one value per sample
    pt, ps = _softmax(t), _softmax(s)
    return (pt * (np.log(pt) - np.log(ps))).sum(axis=1)


def test_soft_ce_matches_hand_computation() -> None:
    want_one = _soft_ce_rows(S, T1).mean()
    want_two = (_soft_ce_rows(S, T1).mean() + _soft_ce_rows(S, T2).mean()) / 2
    assert KD_LOSSES.get("soft_ce")(_t(S), [_t(T1)]).item() == pytest.approx(want_one, rel=1e-5)
    assert KD_LOSSES.get("soft_ce")(_t(S), [_t(T1), _t(T2)]).item() == pytest.approx(want_two, rel=1e-5)


def test_kl_matches_hand_computation_with_temperature() -> None:
    tau = 2.0
    want = ((_kl_rows(T1 / tau, S / tau).mean() + _kl_rows(T2 / tau, S / tau).mean()) / 2) * tau**2
    got = KD_LOSSES.get("kl")(_t(S), [_t(T1), _t(T2)], temperature=tau)
    assert got.item() == pytest.approx(want, rel=1e-5)
    # τ = 1 KL = soft CE − teacher entropy
    ent = -(_softmax(T1) * np.log(_softmax(T1))).sum(axis=1).mean()
    assert KD_LOSSES.get("kl")(_t(S), [_t(T1)]).item() == pytest.approx(_soft_ce_rows(S, T1).mean() - ent, rel=1e-5)


def test_gap_ensemble_official_matches_spec_formula() -> None:
    ce1, ce2 = _soft_ce_rows(S, T1), _soft_ce_rows(S, T2)  # CE_{b,i}
    l1, l2 = ce1.mean(), ce2.mean()  # L_i, batch scalars
    a1 = np.exp(ce1) / (np.exp(ce1) + np.exp(ce2))  # α_{b,1}, softmax over the two teachers
    a2 = 1 - a1
    want = np.mean((a1 * l1 + a2 * l2) / 2)
    got = KD_LOSSES.get("gap_ensemble_official")(_t(S), [_t(T1), _t(T2)])
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_gap_ensemble_weights_are_detached() -> None:
    # the gradient must be that of mean_b(α_b · L)/2 with α held constant
    s = _t(S).requires_grad_(True)
    KD_LOSSES.get("gap_ensemble_official")(s, [_t(T1), _t(T2)]).backward()
    ce1, ce2 = _soft_ce_rows(S, T1), _soft_ce_rows(S, T2)
    a1 = _t(np.exp(ce1) / (np.exp(ce1) + np.exp(ce2))).mean()
    s2 = _t(S).requires_grad_(True)
    soft = KD_LOSSES.get("soft_ce")
    ((a1 * soft(s2, [_t(T1)]) + (1 - a1) * soft(s2, [_t(T2)])) / 2).backward()
    assert torch.allclose(s.grad, s2.grad, atol=1e-6)


def test_gap_ensemble_official_one_teacher_is_half_soft_ce() -> None:
    got = KD_LOSSES.get("gap_ensemble_official")(_t(S), [_t(T1)])
    assert got.item() == pytest.approx(0.5 * _soft_ce_rows(S, T1).mean(), rel=1e-5)


def test_gap_ensemble_paper_matches_eq4_reading() -> None:
    ps = _softmax(S)
    ce1 = -(ps * np.log(_softmax(T1))).sum(axis=1)  # −Σ S log T, as printed in eq. 4
    ce2 = -(ps * np.log(_softmax(T2))).sum(axis=1)
    sigma2 = np.exp(ce2) / (np.exp(ce1) + np.exp(ce2))  # weight of the strong teacher T2
    want = np.mean(sigma2 * _kl_rows(T2, S) + (1 - sigma2) * _kl_rows(T1, S))
    got = KD_LOSSES.get("gap_ensemble_paper")(_t(S), [_t(T1), _t(T2)])
    assert got.item() == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("name", sorted(KD_LOSSES.list()))
def test_losses_are_scalars_and_reject_bad_shapes(name: str) -> None:
    fn = KD_LOSSES.get(name)
    assert fn(_t(S), [_t(T1), _t(T2)]).dim() == 0
    with pytest.raises(ValueError):
        fn(_t(S), [])
    with pytest.raises(ValueError):
        fn(_t(S), [_t(T1[:, :2])])


def _tiny(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 3))


def test_teacher_is_frozen_eval_and_no_grad_even_after_train() -> None:
    inner = _tiny(0)
    teacher = load_teacher(inner, name="t")
    holder = nn.Module()
    holder.add_module("teacher", teacher)
    holder.train()  # a runner calling .train() on everything must not wake the teacher up
    assert teacher.train() is teacher
    assert not teacher.training and not any(m.training for m in inner.modules())
    assert all(not p.requires_grad for p in inner.parameters())
    running = inner[2].running_mean.clone()
    x = torch.randn(5, 4, requires_grad=True)
    out = teacher(x)
    assert out.dtype == torch.float32 and not out.requires_grad and out.grad_fn is None
    assert torch.equal(inner[2].running_mean, running)  # BN statistics untouched
    assert torch.equal(teacher(x), out)  # dropout off: deterministic


def test_teacher_half_autocast_returns_float32() -> None:
    x = torch.randn(3, 4)
    out = Teacher(_tiny(0), half="bf16")(x)
    assert out.dtype == torch.float32
    assert torch.allclose(out, Teacher(_tiny(0))(x), atol=5e-2)  # bf16 rounding only
    with pytest.raises(ValueError):
        Teacher(_tiny(0), half="int8")


def test_teacher_renormalisation() -> None:
    s_mean, s_std = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0]
    t_mean, t_std = [0.5, 0.5, 0.5], [0.2, 0.4, 1.0]
    seen = {}

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen["x"] = x
            return x.mean(dim=(2, 3))

    teacher = Teacher(Probe(), mean=t_mean, std=t_std, student_mean=s_mean, student_std=s_std)
    raw = torch.rand(2, 3, 4, 4)  # pixel values in [0, 1]
    sm, ss = torch.tensor(s_mean).view(1, 3, 1, 1), torch.tensor(s_std).view(1, 3, 1, 1)
    tm, ts = torch.tensor(t_mean).view(1, 3, 1, 1), torch.tensor(t_std).view(1, 3, 1, 1)
    teacher((raw - sm) / ss)  # the student's batch
    assert torch.allclose(seen["x"], (raw - tm) / ts, atol=1e-6)  # what the teacher should have seen
    with pytest.raises(ValueError):
        Teacher(Probe(), mean=t_mean, std=t_std)


def test_gradients_flow_to_student_only() -> None:
    student, t1, t2 = _tiny(1), _tiny(2), _tiny(3)
    task = DistillationTask([t1, t2], loss="gap_ensemble_official")
    student.train()
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    parts = task(student, x, y)
    assert set(parts) == {"loss", "output", "kd", "ce"}
    parts["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for t in (t1, t2) for p in t.parameters())
    assert torch.equal(parts["loss"].detach(), parts["kd"])  # label weight 0: KD only
    # teachers stay in a plain list: nothing of theirs reaches an optimizer built from the student
    assert not any(isinstance(v, nn.Module) for v in vars(task).values())


def test_label_weight_adds_cross_entropy() -> None:
    student = _tiny(1)
    student.eval()
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    parts = DistillationTask(_tiny(2), loss="kl", label_weight=0.5, temperature=4.0)(student, x, y)
    assert parts["loss"].item() == pytest.approx(parts["kd"].item() + 0.5 * parts["ce"].item(), rel=1e-6)


def test_assistant_schedule_official_switch_points() -> None:
    sched = AssistantSchedule("convnext_tiny", ["b0", "b4", "convnext_tiny"], epochs=512)
    assert [sched.index(e) for e in (0, 170, 171, 341, 342, 511)] == [0, 0, 1, 1, 2, 2]
    assert sched.teachers(170) == ["b0", "convnext_tiny"]
    assert sched.teachers(171) == ["b4", "convnext_tiny"]
    assert sched.active_name(342) == "convnext_tiny"
    assert sched.index(10_000) == 2  # capped at n − 1
    # matches the official float formula floor(e / (E/n)) on every epoch
    assert all(sched.index(e) == min(math.floor(e / (512 / 3)), 2) for e in range(512))
    solo = AssistantSchedule("b0", [], epochs=10)
    assert solo.teachers(5) == ["b0"] and solo.active_name(5) is None


def test_distillation_task_set_epoch_switches_teachers() -> None:
    strong, a1, a2 = (Teacher(_tiny(i), name=n) for i, n in ((0, "strong"), (1, "a1"), (2, "a2")))
    task = DistillationTask(AssistantSchedule(strong, [a1, a2], epochs=4), loss="gap_ensemble_official")
    assert task.teachers == [a1, strong] and task.active_assistant == "a1"
    task.set_epoch(2)
    assert task.teachers == [a2, strong] and task.active_assistant == "a2"
    task.set_epoch(9)
    assert task.teachers == [a2, strong]


def test_knowledge_complexity_reproduces_table8() -> None:
    assert knowledge_complexity(21.80, 73.31) == pytest.approx(1.487, abs=1e-3)
    assert knowledge_complexity(5.29, 0.7753) == pytest.approx(0.893, abs=1e-3)
    assert knowledge_complexity(5.29, 77.53) == knowledge_complexity(5.29, 0.7753)


def test_rank_teachers_proposes_group() -> None:
    entries = [
        {"name": "efficientnet_b4", "params_millions": 19.34, "accuracy": 79.26},
        {"name": "efficientnet_b0", "params_millions": 5.29, "accuracy": 77.53},
        {"name": "efficientnet_b2", "params_millions": 9.11, "accuracy": 78.06},
    ]
    rows = rank_teachers(entries)
    assert [r["name"] for r in rows] == ["efficientnet_b0", "efficientnet_b2", "efficientnet_b4"]  # BNext-M
    assert [r["role"] for r in rows] == ["assistant 1", "assistant 2", "strong"]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert rank_teachers(entries, include_strong=True)[-1]["role"] == "strong, assistant 3"


def test_count_params() -> None:
    assert count_params(nn.Linear(4, 3)) == 15


def test_cli_teachers_rank(capsys: pytest.CaptureFixture[str]) -> None:
    from onebit.cli import main

    rc = main(["teachers", "rank", "resnet_digits", "bnext_digits", "--acc", "resnet_digits=90", "--acc",
               "bnext_digits=0.95"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    assert "knowledge complexity" in out and "resnet_digits" in out and "bnext_digits" in out
    assert "strong teacher:" in out and "assistant group" in out
    assert "95.00" in out and "90.00" in out
    assert main(["teachers", "rank", "resnet_digits"]) == 2  # no accuracy given


def test_load_teacher_from_name_directory_and_weights_file(tmp_path) -> None:
    from onebit.models import create_model
    from onebit.models.io import save_model_dir

    model = create_model("resnet_digits")
    save_model_dir(model, tmp_path)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    x = torch.randn(2, 1, 16, 16)
    model.eval()
    with torch.no_grad():
        want = model(x)
    for ref in (tmp_path, tmp_path / "model.safetensors", tmp_path / "weights.pt"):
        teacher = load_teacher(ref, device="cpu")
        assert isinstance(teacher, Teacher) and torch.allclose(teacher(x), want, atol=1e-5)
    assert count_params(load_teacher("resnet_digits").model) == count_params(model)
