"""latentebm.malloc_tuning: glibc accepts the settings; LATENTEBM_MALLOC=default leaves them."""

from __future__ import annotations

import ctypes.util
import sys

import pytest

from latentebm import malloc_tuning


def test_opt_out_leaves_glibc_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("default", "0", "OFF"):
        monkeypatch.setenv(malloc_tuning.ENV_VAR, value)
        assert malloc_tuning.keep_freed_memory() is False


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or "musl" in (ctypes.util.find_library("c") or ""),
    reason="mallopt is glibc's (Linux)",
)
def test_glibc_accepts_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(malloc_tuning.ENV_VAR, raising=False)
    assert malloc_tuning.keep_freed_memory() is True


def test_not_linux_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(malloc_tuning.ENV_VAR, raising=False)
    monkeypatch.setattr(malloc_tuning.sys, "platform", "darwin")
    assert malloc_tuning.keep_freed_memory() is False
