"""The config's `env:` section: names, values, the offline policy and the vision variables are checked at load,
each problem with its file:line, key and value; nothing reaches os.environ or ms-swift first."""

from __future__ import annotations

import pytest

from src.config import ConfigError, load_project_config
from src.config.offline import VISION_ENV_TYPES

BAD_ENV = [
    pytest.param('"A=B": 1', "`env` key 'A=B' is not a variable name", id="equals-in-name"),
    pytest.param('"": 1', "`env` key '' is not a variable name", id="empty-name"),
    pytest.param('"1A": x', "`env` key '1A' is not a variable name", id="name-starts-with-a-digit"),
    pytest.param('A: "x\\0y"', "`env.A` = 'x\\x00y': holds a NUL character", id="nul-in-value"),
    pytest.param('HF_HUB_OFFLINE: "0"', "`env.HF_HUB_OFFLINE` = '0': the project sets HF_HUB_OFFLINE=1",
                 id="offline-undone"),
    pytest.param("TRANSFORMERS_OFFLINE: 0", "`env.TRANSFORMERS_OFFLINE` = '0': the project sets",
                 id="offline-undone-as-a-number"),
    pytest.param("IMAGE_MAX_TOKEN_NUM: lots",
                 "`env.IMAGE_MAX_TOKEN_NUM` = 'lots': IMAGE_MAX_TOKEN_NUM must be a whole number above 0",
                 id="vision-not-a-number"),
    pytest.param("MAX_PIXELS: 1.5e6", "`env.MAX_PIXELS` = '1.5e6': MAX_PIXELS must be a whole number above 0",
                 id="vision-not-whole"),
    pytest.param("IMAGE_MIN_TOKEN_NUM: -4", "`env.IMAGE_MIN_TOKEN_NUM` = '-4'", id="vision-negative"),
    pytest.param("FPS: fast", "`env.FPS` = 'fast': FPS must be a number above 0", id="fps-not-a-number"),
]


@pytest.mark.parametrize(("entry", "fragment"), BAD_ENV)
def test_a_bad_env_entry_is_refused_with_its_line(tree, entry, fragment):
    t = tree(f"env:\n  {entry}\n")
    with pytest.raises(ConfigError) as err:
        load_project_config(t.config)
    assert f"{t.config.resolve()}:3: {fragment}" in str(err.value), str(err.value)


def test_good_env_entries_load_as_strings(tree):
    t = tree("env:\n  HF_HUB_OFFLINE: '1'\n  IMAGE_MAX_TOKEN_NUM: 256\n  FPS: 0.5\n  _MY_VAR2: a=b c\n")
    assert load_project_config(t.config).env == {"HF_HUB_OFFLINE": "1", "IMAGE_MAX_TOKEN_NUM": "256", "FPS": "0.5",
                                                 "_MY_VAR2": "a=b c"}
    # The same switch in another spelling huggingface_hub and tokenizers read alike: not a change of policy.
    t = tree("env:\n  HF_HUB_OFFLINE: 'true'\n  TRANSFORMERS_OFFLINE: 'YES'\n  TOKENIZERS_PARALLELISM: 'False'\n")
    assert load_project_config(t.config).env["TOKENIZERS_PARALLELISM"] == "False"


def test_the_vision_variables_checked_are_those_the_plugin_records():
    from src.training.swift_plugin import VISION_ENV_KEYS

    assert set(VISION_ENV_TYPES) == set(VISION_ENV_KEYS)


def test_a_run_cannot_undo_the_offline_policy(tree, monkeypatch):
    from src.datasets.run_config import load_run

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # restored after the test, whatever load_run does
    with pytest.raises(ConfigError, match="the project sets HF_HUB_OFFLINE=1"):
        load_run(tree("env:\n  HF_HUB_OFFLINE: '0'\n").config)
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"
