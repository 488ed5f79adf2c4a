"""DeepSpeed with two CPU processes (gloo), for real: ZeRO-2, ZeRO-3 and ZeRO-3 with offload train the stage-2
recipe; a ZeRO-3 LoRA checkpoint holds only the adapter and the aligner at full shape, `swift export
--merge_lora` of it gives the logits PEFT gives with the same adapter; a stage-1 full-aligner run under
ZeRO-3 saves weights transformers loads. The ZeRO-3 run also has ranks whose batches hold different
numbers of images (configs/deepspeed/README.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.support.multiprocess import free_port, train_sh, write_run_config

pytestmark = pytest.mark.slow
SWIFT = str(Path(sys.executable).with_name("swift"))
ALIGNER = (".visual.merger.", ".visual.deepstack_merger_list.")


def _train(root: Path, tmp_path: Path, name: str, preset: str, **sections) -> Path:
    config = write_run_config(tmp_path, name, workspace=root, deepspeed={"enabled": True, "config": preset},
                              **sections)
    proc = train_sh([f"config={config}", "gpus=cpu", "nproc=2", f"master_port={free_port()}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert "world_size: 2" in proc.stdout
    return tmp_path / name


def _assert_adapter_only_at_full_shape(checkpoint: Path, base_model: Path) -> None:
    assert not list(checkpoint.glob("model*.safetensors")), "a LoRA checkpoint must not hold the full model"
    base = load_file(str(base_model / "model.safetensors"))
    with safe_open(str(checkpoint / "adapter_model.safetensors"), "pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    lora = {k: v for k, v in tensors.items() if "lora_" in k}
    full = {k: v for k, v in tensors.items() if "lora_" not in k}
    assert lora and all(".language_model." in k for k in lora)
    assert full and all(any(a in k for a in ALIGNER) for k in full), sorted(full)[:5]
    for key, tensor in lora.items():  # gathered, not a rank's empty ZeRO-3 shard
        weight = base[key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
                      .replace(".lora_B.weight", ".weight")]
        dim = 1 if ".lora_A." in key else 0
        assert tensor.numel() > 0 and tensor.shape[dim] == weight.shape[dim], (key, tuple(tensor.shape))
    for key, tensor in full.items():
        assert tensor.shape == base[key.removeprefix("base_model.model.")].shape, key


def _logits(model, processor, image: Path) -> torch.Tensor:
    messages = [{"role": "user", "content": [{"type": "image", "image": str(image)},
                                             {"type": "text", "text": "Locate every object."}]}]
    inputs = processor.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True,
                                           return_tensors="pt")
    with torch.no_grad():
        return model(**inputs).logits


def test_zero3_lora_adapter_merges_to_the_logits_peft_gives(mp_workspace, tmp_path):
    root = mp_workspace
    # Two records per user turn over 9 records: one sample has one image, the others two, so in some
    # step the ranks' batches hold different numbers of images (every rank must still run the ViT).
    run = _train(root, tmp_path, "zero3", "zero3", custom={"images_per_user_turn": 2},
                 training={"max_steps": -1, "num_train_epochs": 1, "save_strategy": "epoch", "learning_rate": 1e-2})
    checkpoint = next(run.glob("checkpoint-*"))
    _assert_adapter_only_at_full_shape(checkpoint, root / "model")

    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": str(Path(sys.executable).parent)}
    export = subprocess.run([SWIFT, "export", "--adapters", str(checkpoint), "--merge_lora", "true",
                             "--output_dir", str(tmp_path / "merged")], cwd=tmp_path, capture_output=True, text=True,
                            env=env, timeout=600)
    assert export.returncode == 0, export.stderr[-3000:]

    from peft import PeftModel
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    processor = AutoProcessor.from_pretrained(root / "model")
    image = next((root / "data" / "images").glob("*.png"))
    base = Qwen3VLForConditionalGeneration.from_pretrained(root / "model", dtype=torch.float32).eval()
    base_logits = _logits(base, processor, image)
    with_adapter = PeftModel.from_pretrained(base, str(checkpoint)).eval()
    merged = Qwen3VLForConditionalGeneration.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    expected, got = _logits(with_adapter, processor, image), _logits(merged, processor, image)
    assert not torch.allclose(expected, base_logits, atol=1e-4)  # the adapter changed something
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("preset", ["zero2", "zero3_offload"])
def test_other_presets_train_two_processes_into_an_adapter(mp_workspace, tmp_path, preset):
    run = _train(mp_workspace, tmp_path, preset, preset, training={"max_steps": 2})
    _assert_adapter_only_at_full_shape(run / "checkpoint-2", mp_workspace / "model")
    assert (run / "checkpoint-2" / "global_step2").is_dir()  # DeepSpeed's own engine state, for resuming


def test_stage1_full_aligner_under_zero3_saves_loadable_weights(mp_workspace, tmp_path):
    root = mp_workspace
    run = _train(root, tmp_path, "stage1", "zero3", recipe="stage_1_full_aligner_only.yaml",
                 training={"max_steps": 2, "learning_rate": 1e-2})
    from transformers import Qwen3VLForConditionalGeneration

    model = Qwen3VLForConditionalGeneration.from_pretrained(run / "checkpoint-2", dtype=torch.float32)
    trained = model.state_dict()
    base = load_file(str(root / "model" / "model.safetensors"))
    assert set(base) <= set(trained)  # every weight saved, none left as an empty ZeRO-3 shard
    assert all(trained[k].shape == v.shape for k, v in base.items())
    changed = {k for k, v in base.items() if not torch.equal(v, trained[k])}
    assert changed and all(any(a in k for a in ALIGNER) for k in changed), sorted(changed)[:5]
