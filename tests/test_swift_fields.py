"""The SftArguments fields read statically from ms-swift's sources match the real dataclass, and a
config's kwargs build a real `SftArguments` for a tiny local model."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from src.config import load_project_config, to_sft_kwargs
from src.config.swift_fields import field_choices, sft_argument_fields
from src.config.types import checker_for
from tests.config_helpers import REPO, make_data, write_yaml


def test_reading_the_fields_imports_neither_torch_nor_swift():
    code = ("import sys\nfrom src.config.swift_fields import sft_argument_fields\n"
            "assert len(sft_argument_fields()) > 100\n"
            "print(sorted(m for m in ('torch', 'swift', 'transformers') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_known_fields_and_their_annotations():
    fields = sft_argument_fields()
    assert fields["tuner_type"].annotation == "str"
    assert fields["max_length"].annotation == "Optional[int]"
    assert fields["target_modules"].annotation == "List[str]"
    assert fields["freeze_llm"].annotation == "bool"
    assert fields["num_train_epochs"].owner.startswith("transformers.training_args.")
    assert fields["freeze_aligner"].owner.startswith("swift.")
    assert "train_type" not in fields  # our name; ms-swift's is tuner_type


@pytest.mark.slow
def test_static_choices_equal_the_real_ones(swift_sft_arguments):
    from swift.arguments.base_args.base_args import get_supported_tuners
    from transformers.trainer_utils import IntervalStrategy, SaveStrategy, SchedulerType

    choices = field_choices()
    assert set(choices["tuner_type"]) == set(get_supported_tuners())
    assert choices["save_strategy"] == tuple(m.value for m in SaveStrategy)
    assert choices["eval_strategy"] == choices["logging_strategy"] == tuple(m.value for m in IntervalStrategy)
    assert choices["lr_scheduler_type"] == tuple(m.value for m in SchedulerType)


@pytest.fixture(scope="module")
def swift_sft_arguments():
    from src.config.offline import apply_offline_env

    apply_offline_env()
    from swift.arguments import SftArguments

    return SftArguments


@pytest.mark.slow
def test_static_fields_equal_the_real_dataclass_fields(swift_sft_arguments):
    real = {f.name for f in dataclasses.fields(swift_sft_arguments)}
    static = sft_argument_fields()
    assert set(static) == real
    # The most derived declaration wins, as in the real MRO.
    for name, field in static.items():
        owner = next(c for c in swift_sft_arguments.__mro__ if name in c.__dict__.get("__annotations__", {}))
        assert field.owner == f"{owner.__module__}.{owner.__qualname__}", name


def _default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


@pytest.mark.slow
def test_each_fields_default_passes_its_own_annotation(swift_sft_arguments):
    fields = sft_argument_fields()
    refused = []
    for field in dataclasses.fields(swift_sft_arguments):
        default = _default(field)
        annotation = fields[field.name].annotation
        if default is dataclasses.MISSING or (default is None and annotation.startswith("Literal[")):
            continue  # the None-under-Literal case is the xfail in test_config_schema.py
        if not checker_for(annotation)(default):
            refused.append((field.name, annotation, default))
    assert not refused


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, swift_sft_arguments):
    from src.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "tuner_type", "freeze"), [
    ("stage_1_full_aligner_only.yaml", "full", (True, True, False)),
    # stage 2: LoRA kept off the aligner (freeze_aligner), which trains in full through modules_to_save
    ("stage_2_llm_lora.yaml", "lora", (False, True, True)),
])
def test_a_real_sft_arguments_builds_from_a_config(tmp_path, tiny_model, swift_sft_arguments, stage, tuner_type,
                                                   freeze):
    data = make_data(tmp_path / "data")
    cfg_path = write_yaml(tmp_path / "run.yaml", {
        "extends": [str(REPO / "configs" / stage), str(REPO / "configs" / "cpu.yaml")],
        "model": {"model": str(tiny_model)},
        "custom": {"train_jsonl": "data/train.jsonl", "val_jsonl": "data/val.jsonl"},
        "training": {"output_dir": "out"},
        "global_max_length": 512,
    })
    kwargs = to_sft_kwargs(load_project_config(cfg_path))
    args = swift_sft_arguments(**kwargs)
    assert args.tuner_type == tuner_type
    assert (args.max_length, args.max_model_len) == (512, 512)
    configured = (kwargs["freeze_llm"], kwargs["freeze_vit"], kwargs["freeze_aligner"])
    assert configured == freeze
    assert (args.freeze_llm, args.freeze_vit, args.freeze_aligner) == configured
    assert args.model == str(tiny_model)
    assert args.output_dir == str(tmp_path / "out")
    assert args.dataset == [data["train"]]
    assert args.strict is True and args.check_model is False
