"""Fixtures for the unit tests that talk to the fake OpenAI-compatible server."""

from __future__ import annotations

import pytest

from tests.unit.fake_openai import FAKE_KEY, JUDGE_ENV, KEY_ENV, FakeOpenAI


@pytest.fixture
def openai_env(monkeypatch, tmp_path):
    """No real endpoint, key or proxy from the environment; the fake key; a private cache."""
    for var in JUDGE_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("PERSONALENS_CACHE", str(tmp_path / "plcache"))
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)


@pytest.fixture
def fake():
    """A fresh fake server per test (see tests/unit/fake_openai.py)."""
    server = FakeOpenAI()
    yield server
    server.stop()
