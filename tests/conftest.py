"""Fixtures shared by the config tests: a small valid data set and a writer of config trees around it."""

from __future__ import annotations

from pathlib import Path

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
