"""Shared generated data sets (module-wide: generation is the slow part of these tests)."""
from __future__ import annotations

from pathlib import Path

import pytest

from hrlms.synth import Messiness, generate

from .helpers import START, WORKERS


@pytest.fixture(scope="session")
def csv_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("csv_run")
    generate(out, workers=WORKERS, days=3, start=START, seed=42)
    return out


@pytest.fixture(scope="session")
def csv_run_again(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("csv_run_again")
    generate(out, workers=WORKERS, days=3, start=START, seed=42)
    return out


@pytest.fixture(scope="session")
def jsonl_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("jsonl_run")
    generate(out, workers=WORKERS, days=2, start=START, seed=42, fmt="jsonl")
    return out


@pytest.fixture(scope="session")
def plain_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plain_run")
    generate(out, workers=WORKERS, days=1, start=START, seed=42, messiness=Messiness(bom=False, crlf=False))
    return out
