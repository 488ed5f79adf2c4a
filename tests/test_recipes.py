"""Every shipped recipe trains exactly the parameters it says, on the tiny model of each family (Qwen3-VL
dense and MoE, Qwen3.5 dense and MoE), with the real ms-swift. On Qwen3-VL-MoE, `lora:llm` is the attention
projections only (tests/test_tiny_moe.py says why). Qwen3.5 has no deepstack mergers: its aligner is the merger.

Groups: llm (model.language_model, lm_head), vit (model.visual blocks, patch/pos embeddings),
merger (model.visual.merger), deepstack (model.visual.deepstack_merger_list), and lora:<group> for
LoRA weights on a group. The aligner is merger + deepstack.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from src.config import load_project_config, to_sft_kwargs
from src.config.families import FAMILIES
from src.config.offline import apply_offline_env
from src.datasets.plan import plan_data
from src.datasets.synth import write_synthetic_dataset
from src.tiny_model import build_tiny_model

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
ARCHS = ("qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe")
MODEL_DIRS = {"qwen3_vl": "model", "qwen3_vl_moe": "model_moe", "qwen3_5": "model_q35", "qwen3_5_moe": "model_q35_moe"}


def base_name(name: str) -> str:
    """A parameter's name in the base model, whatever PEFT wrapped around it."""
    name = name.removeprefix("base_model.model.")
    for wrapper in (".base_layer", ".original_module", ".modules_to_save.default"):
        name = name.replace(wrapper, "")
    return name


def group(name: str) -> str:
    plain = base_name(name)
    if plain.startswith("model.visual.merger."):
        part = "merger"
    elif plain.startswith("model.visual.deepstack_merger_list."):
        part = "deepstack"
    elif plain.startswith("model.visual."):
        part = "vit"
    else:
        part = "llm"
    return f"lora:{part}" if "lora_" in name else part


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    apply_offline_env()
    root = tmp_path_factory.mktemp("recipes")
    for arch in ARCHS:
        build_tiny_model(root / MODEL_DIRS[arch], arch=arch)
    write_synthetic_dataset(root / "data", n=6)
    return root


def train(workspace: Path, name: str, recipe: str, extra: str = "", arch: str = "qwen3_vl"):
    from swift import SftArguments

    from src.training.pipeline import GroundingSft

    config = workspace / f"{name}.yaml"
    model = ("model:\n  model: ./model\n" if arch == "qwen3_vl"
             else f"model:\n  model: ./{MODEL_DIRS[arch]}\n  model_type: {arch}\n"
             f"template:\n  template: {FAMILIES[arch].template}\n")
    config.write_text(
        f"extends: [{REPO / 'configs' / recipe}, {REPO / 'configs' / 'cpu.yaml'}]\n{model}"
        "custom:\n  train_jsonl: data/train.jsonl\n  health_check_samples: 1\n"
        f"training:\n  output_dir: ./{name}\n  max_steps: 2\n  learning_rate: 1.0e-2\n  eval_strategy: 'no'\n"
        f"  save_strategy: steps\n  save_steps: 2\n{extra}")
    cfg = load_project_config(config)
    sft = GroundingSft(SftArguments(**to_sft_kwargs(cfg)), cfg, plan_data(cfg), [])
    result = sft.main()
    return sft.model, result


def loaded_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """The model's weights as transformers loads them (Qwen3.5-MoE's experts are stored one by one and
    fused at load: the file's names are not the model's)."""
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(model_dir).state_dict()


def trainable_groups(model) -> set[str]:
    return {group(n) for n, p in model.named_parameters() if p.requires_grad}


def assert_frozen_unchanged(model, original: dict[str, torch.Tensor]) -> None:
    checked = 0
    for name, param in model.named_parameters():
        if param.requires_grad or "lora_" in name:
            continue
        reference = original[base_name(name)].to(param.dtype)
        assert torch.equal(param.detach().cpu(), reference), f"frozen {name} changed"
        checked += 1
    assert checked > 0


RECIPES = [
    ("stage_1_full_aligner_only.yaml", {"merger", "deepstack"}),
    ("stage_1_aligner_lora.yaml", {"lora:merger", "lora:deepstack"}),
    ("stage_2_llm_lora.yaml", {"lora:llm", "merger", "deepstack"}),
]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("recipe", "expected"), RECIPES, ids=[r for r, _ in RECIPES])
def test_recipe_trains_exactly_its_groups_and_nothing_else_moves(workspace, recipe, expected, arch):
    model_dir = workspace / MODEL_DIRS[arch]
    if arch.startswith("qwen3_5"):  # no deepstack mergers
        expected = {g for g in expected if not g.endswith("deepstack")}
    original = loaded_weights(model_dir)
    model, result = train(workspace, f"{recipe.removesuffix('.yaml')}-{arch}", recipe, arch=arch)
    assert trainable_groups(model) == expected
    assert_frozen_unchanged(model, original)
    moved = [n for n, p in model.named_parameters() if p.requires_grad and "lora_A" not in n
             and not torch.equal(p.detach().cpu(), original.get(base_name(n), torch.zeros(0)).to(p.dtype))]
    assert moved, "no trainable parameter changed in two steps"
    assert result["global_step"] == 2


# What ms-swift's `all-linear` puts LoRA on in each family's language model (tests/test_tiny_moe.py says why the
# Qwen3-VL MoE gets attention only), and the aligner the stage-2 adapter holds in full.
STAGE2_ADAPTERS = {
    "qwen3_vl_moe": ({"q_proj", "k_proj", "v_proj", "o_proj"}, (".visual.merger.", ".visual.deepstack_merger_list.")),
    "qwen3_5": ({"in_proj_qkv", "in_proj_z", "in_proj_a", "in_proj_b", "out_proj", "q_proj", "k_proj", "v_proj",
                 "o_proj", "gate_proj", "up_proj", "down_proj"}, (".visual.merger.",)),
    "qwen3_5_moe": ({"in_proj_qkv", "in_proj_z", "in_proj_a", "in_proj_b", "out_proj", "q_proj", "k_proj", "v_proj",
                     "o_proj", "gate_proj", "up_proj", "down_proj", "shared_expert_gate"}, (".visual.merger.",)),
}


@pytest.mark.parametrize("arch", STAGE2_ADAPTERS)
def test_each_familys_stage2_adapter_holds_what_all_linear_means_there_and_answers(workspace, arch):
    """The stage-2 adapter of each other family (from the recipe test above): LoRA on exactly the linears
    ms-swift's `all-linear` resolves to (on the Qwen3-VL MoE neither experts nor router; on Qwen3.5 both layer
    kinds), the aligner in full; it answers through src.infer and src.eval scores the answers."""
    from safetensors import safe_open

    from src.eval import main as eval_main
    from src.infer import main as infer_main

    checkpoint = workspace / f"stage_2_llm_lora-{arch}" / "checkpoint-2"
    if not checkpoint.is_dir():
        train(workspace, f"stage_2_llm_lora-{arch}", "stage_2_llm_lora.yaml", arch=arch)
    with safe_open(str(checkpoint / "adapter_model.safetensors"), "pt") as fh:
        keys = list(fh.keys())
    lora = [k for k in keys if ".lora_" in k]
    linears, aligner = STAGE2_ADAPTERS[arch]
    assert {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in lora} == linears
    assert all(".language_model." in k for k in lora)
    full = [k for k in keys if ".lora_" not in k]
    assert full and all(any(a in k for a in aligner) for k in full), full
    predictions, metrics = workspace / f"{arch}.pred.jsonl", workspace / f"{arch}.metrics.json"
    data = workspace / "data" / "train.jsonl"
    assert infer_main(["--config", str(workspace / f"stage_2_llm_lora-{arch}.yaml"), "--checkpoint", str(checkpoint),
                       "--jsonl", str(data), "--limit", "2", "--max_new_tokens", "16", "--out", str(predictions)]) == 0
    assert eval_main(["--pred", str(predictions), "--gt", str(data), "--out", str(metrics)]) == 0
    assert len(predictions.read_text().splitlines()) == 2 and json.loads(metrics.read_text())["n_pred_rows"] == 2


def test_stage2_warm_starts_from_a_stage1_adapter(workspace, capsys):
    adapter = (workspace / "stage_1_aligner_lora" / "checkpoint-2").resolve()
    if not adapter.is_dir():
        train(workspace, "stage_1_aligner_lora", "stage_1_aligner_lora.yaml")
    from src.sft import main

    config = workspace / "from_adapter.yaml"
    config.write_text(
        f"extends: [{REPO / 'configs' / 'stage_2_llm_lora.yaml'}, {REPO / 'configs' / 'cpu.yaml'}]\n"
        f"model:\n  model: ./model\nrun:\n  init_from: {adapter}\n"
        "custom:\n  train_jsonl: data/train.jsonl\n  health_check_samples: 1\n"
        "training:\n  output_dir: ./from_adapter\n  max_steps: 1\n  eval_strategy: 'no'\n")
    assert main(["--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"warm start: the adapter {adapter} is merged" in out
    merged = workspace / "from_adapter" / "init_merged"
    assert (merged / "config.json").is_file()
    args = json.loads((workspace / "from_adapter" / "checkpoint-1" / "args.json").read_text())
    assert args["model"] == str(merged)


def test_resume_pointing_at_another_recipe_becomes_a_warm_start(workspace, capsys):
    stage1 = (workspace / "stage_1_full_aligner_only" / "checkpoint-2").resolve()
    if not stage1.is_dir():
        train(workspace, "stage_1_full_aligner_only", "stage_1_full_aligner_only.yaml")
    from src.sft import main

    config = workspace / "seed_style.yaml"
    config.write_text(
        f"extends: [{REPO / 'configs' / 'stage_2_llm_lora.yaml'}, {REPO / 'configs' / 'cpu.yaml'}]\n"
        f"model:\n  model: ./model\ntuner:\n  resume_from_checkpoint: {stage1}\n"
        "custom:\n  train_jsonl: data/train.jsonl\n  health_check_samples: 1\n"
        "training:\n  output_dir: ./seed_style\n  max_steps: 1\n  eval_strategy: 'no'\n")
    assert main(["--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "was trained with another trainable set" in out and "tuner_type: 'full' there, 'lora' here" in out
    args = json.loads((workspace / "seed_style" / "checkpoint-1" / "args.json").read_text())
    assert args["model"] == str(stage1) and not args.get("resume_from_checkpoint")


def test_eager_encoding_path_trains(workspace):
    """`lazy_tokenize: false` (the path packing takes on a GPU): rows go in as a datasets.Dataset that
    ms-swift encodes up front with forked workers, so this runs in a fresh process (a fork of this one,
    which has run torch ops, would deadlock in OpenMP, exactly what src/training/pipeline.py orders around)."""
    import subprocess
    import sys

    config = workspace / "eager.yaml"
    config.write_text(
        f"extends: [{REPO / 'configs' / 'stage_2_llm_lora.yaml'}, {REPO / 'configs' / 'cpu.yaml'}]\n"
        "model:\n  model: ./model\ncustom:\n  train_jsonl: data/train.jsonl\n  health_check_samples: 2\n"
        "training:\n  output_dir: ./eager\n  max_steps: 2\n  eval_strategy: 'no'\n  lazy_tokenize: false\n")
    proc = subprocess.run([sys.executable, "-m", "src.sft", "--config", str(config)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "health check: the first 2 samples encode as built" in proc.stdout
    assert (workspace / "eager" / "checkpoint-2" / "adapter_model.safetensors").is_file()
