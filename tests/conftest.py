"""Fixtures shared by the config tests: a small valid data set and a writer of config trees around it."""

from __future__ import annotations

import os
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Several workers share the machine's cores: each worker's torch (and every command it starts) takes one
    # thread, or the workers' thread pools fight and a compute-bound test runs several times slower.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"

import pytest

from tests.config_helpers import make_data, write_config_tree


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data")
    make_data(path)
    return path


@pytest.fixture
def tree(tmp_path, data_dir):
    def make(body=None, **kwargs):
        return write_config_tree(tmp_path, body, data_dir=data_dir, **kwargs)
    return make


@pytest.fixture(scope="session")
def mp_workspace(tmp_path_factory) -> Path:
    """A tiny Qwen3-VL and a synthetic data set (9 training records) shared by the multi-process tests."""
    from src.datasets.synth import write_synthetic_dataset
    from src.tiny_model import build_tiny_model

    root = tmp_path_factory.mktemp("multiprocess")
    build_tiny_model(root / "model")
    write_synthetic_dataset(root / "data", n=11)
    return root


@pytest.fixture(autouse=True, scope="session")
def _verdict_store(tmp_path_factory):
    """Every test (and every command it starts) keeps its validation verdicts in a fresh store."""
    import os

    os.environ["GROUNDING_CACHE_DIR"] = str(tmp_path_factory.mktemp("verdicts"))

