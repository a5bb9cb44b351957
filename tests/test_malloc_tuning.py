"""latentebm.malloc_tuning: glibc accepts the settings; LATENTEBM_MALLOC=default leaves them."""

from __future__ import annotations

import ctypes.util
import os
import sys

import pytest

from latentebm import malloc_tuning


def test_opt_out_leaves_glibc_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("default", "0", "OFF"):
        monkeypatch.setenv(malloc_tuning.ENV_VAR, value)
        assert malloc_tuning.keep_freed_memory() is False


@pytest.mark.parametrize("variable", ["GLIBC_TUNABLES", "MALLOC_ARENA_MAX"])
def test_user_malloc_settings_are_kept(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.delenv(malloc_tuning.ENV_VAR, raising=False)
    monkeypatch.setenv(variable, "glibc.malloc.arena_max=2" if "TUN" in variable else "2")
    assert malloc_tuning.keep_freed_memory() is False


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or "musl" in (ctypes.util.find_library("c") or ""),
    reason="mallopt is glibc's (Linux)",
)
def test_glibc_accepts_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(malloc_tuning.ENV_VAR, raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    for name in [k for k in os.environ if k.startswith("MALLOC_")]:
        monkeypatch.delenv(name)
    assert malloc_tuning.keep_freed_memory() is True


def test_not_linux_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(malloc_tuning.ENV_VAR, raising=False)  # (the platform check comes first)
    monkeypatch.setattr(malloc_tuning.sys, "platform", "darwin")
    assert malloc_tuning.keep_freed_memory() is False
