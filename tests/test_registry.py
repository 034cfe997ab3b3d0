"""Tests for onebit.registry.Registry: register / get / list / build and its error messages."""

from __future__ import annotations

import pytest

from onebit.registry import Registry


class _Thing:
    def __init__(self, size: int = 1, name: str = "x") -> None:
        self.size, self.name = size, name


def _make() -> Registry:
    reg: Registry = Registry("widget")

    @reg.register("alpha_net")
    def alpha_net(**kw):
        return ("alpha", kw)

    reg.register("beta_net", _Thing)
    return reg


def test_register_decorator_with_name_returns_object_unchanged():
    reg: Registry = Registry("widget")

    def f():
        return 3

    g = reg.register("f_name")(f)
    assert g is f  # the decorator must not wrap the function
    assert reg.get("f_name") is f
    assert "f_name" in reg
    assert "f" not in reg  # the explicit name wins over __name__


def test_register_direct_call_returns_object():
    reg: Registry = Registry("widget")
    assert reg.register("thing", _Thing) is _Thing
    assert reg.get("thing") is _Thing


def test_register_without_name_uses_dunder_name():
    reg: Registry = Registry("widget")

    @reg.register()
    def my_entry():
        return 1

    assert reg.list() == ["my_entry"]
    assert reg.get("my_entry") is my_entry
    assert my_entry() == 1


def test_register_bare_decorator_without_parentheses():
    reg: Registry = Registry("widget")

    @reg.register
    def bare_entry():
        return 1

    assert "bare_entry" in reg
    assert bare_entry() == 1


def test_get_and_contains():
    reg = _make()
    assert reg.get("beta_net") is _Thing
    assert "alpha_net" in reg
    assert "gamma_net" not in reg
    assert 3 not in reg  # __contains__ accepts any object


def test_list_is_sorted_and_filters_with_fnmatch():
    reg = _make()
    reg.register("aardvark", _Thing)
    assert reg.list() == sorted(["alpha_net", "beta_net", "aardvark"])
    assert reg.list("a*") == ["aardvark", "alpha_net"]
    assert reg.list("*_net") == ["alpha_net", "beta_net"]
    assert reg.list("?eta_net") == ["beta_net"]
    assert reg.list("nothing*") == []


def test_duplicate_registration_raises_and_keeps_first():
    reg = _make()
    with pytest.raises(ValueError, match="beta_net"):
        reg.register("beta_net", dict)
    with pytest.raises(ValueError, match="registered twice"):

        @reg.register("alpha_net")
        def other(**kw):
            return None

    assert reg.get("beta_net") is _Thing
    assert reg.get("alpha_net")(k=1) == ("alpha", {"k": 1})


def test_unknown_name_keyerror_suggests_close_matches():
    reg = _make()
    with pytest.raises(KeyError) as info:
        reg.get("alpha_nett")
    msg = str(info.value)
    assert "widget" in msg  # the registry's kind names what is missing
    assert "'alpha_nett'" in msg
    assert "did you mean" in msg
    suggestion = msg.split("did you mean", 1)[1].split("?", 1)[0]
    assert "'alpha_net'" in suggestion
    assert "known:" in msg and "beta_net" in msg  # the full list is shown as well


def test_unknown_name_without_close_match_has_no_suggestion():
    reg = _make()
    with pytest.raises(KeyError) as info:
        reg.get("zzzzzzzzzzzz")
    msg = str(info.value)
    assert "did you mean" not in msg
    assert "alpha_net" in msg and "beta_net" in msg


def test_build_by_name_passes_kwargs():
    reg = _make()
    obj = reg.build("beta_net", size=7, name="y")
    assert isinstance(obj, _Thing)
    assert (obj.size, obj.name) == (7, "y")
    # two builds give two objects
    assert reg.build("beta_net") is not reg.build("beta_net")


def test_build_object_and_none_pass_through():
    reg = _make()
    obj = _Thing(5)
    assert reg.build(obj) is obj
    assert reg.build(None) is None


def test_build_unknown_name_raises_keyerror():
    reg = _make()
    with pytest.raises(KeyError, match="did you mean"):
        reg.build("beta_ne")


def test_registries_are_independent():
    a: Registry = Registry("a")
    b: Registry = Registry("b")
    a.register("same", _Thing)
    b.register("same", dict)  # no clash across registries
    assert a.get("same") is _Thing and b.get("same") is dict
