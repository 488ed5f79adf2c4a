"""GPU check (not part of CI): stage 1 and stage 2 on a randomly initialised Qwen3-VL of real 2B size.

Runs a few bf16 steps of each recipe, without and with packing (when a flash-attention build is
installed) and with ZeRO-2 (when deepspeed is installed), and prints samples/s, tokens/s and peak GPU
memory for each, with the unpacked stage-2 run as the baseline ratio. With several GPUs visible every
run goes through torchrun across all of them (NCCL), and tokens/s and peak memory are printed per GPU
(peak memory as the driver reports it, sampled with nvidia-smi, so it includes the CUDA context).
Needs no weights and no network: `python bench/gpu_check.py [--work DIR] [--steps 10] [--arch qwen3_vl]
[--size 2b] [--layers N] [--gpus N]`. Budget: under 8 minutes on one H100.
`--arch` picks the family (qwen3_vl: sizes 2b, 4b; qwen3_vl_moe: 30b-a3b; qwen3_5: 9b; qwen3_5_moe: 35b-a3b).
`--layers` keeps every width but cuts the language model to N layers: the MoEs' whole weights (62 and 70 GB
in bf16) do not fit the check machine's 64 GiB disk, so 30b-a3b runs 12 of its 48 layers and 35b-a3b 10 of
its 40 by default (tokens/s per layer is the real model's; the printout says how many layers ran).
`--size tiny` runs the same plumbing on CPU with the tiny model (no meaningful speed).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLASH_IMPLS = (("flash_attention_2", "flash_attn_2_cuda"), ("flash_attention_3", "flash_attn_interface"),
               ("flash_attention_4", "flash_attn.cute"))


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def flash_attention_impl() -> str | None:
    """The first flash-attention implementation whose package is installed, or None."""
    return next((impl for impl, module in FLASH_IMPLS if _available(module)), None)


def scenarios(flash: str | None, deepspeed: bool, liger: bool = False) -> list[dict]:
    """(name, recipe, overrides, launcher) of each run; skipped ones carry the reason."""
    runs = [
        {"name": "stage1 bf16", "recipe": "stage_1_full_aligner_only.yaml", "extra": {}},
        {"name": "stage2 bf16", "recipe": "stage_2_llm_lora.yaml", "extra": {}},
    ]
    packing = {"name": "stage2 bf16 packing", "recipe": "stage_2_llm_lora.yaml",
               "extra": {"training": {"packing": True, "lazy_tokenize": False}, "model": {"attn_impl": flash}}}
    if flash is None:
        packing["skip"] = "no flash-attention build installed (flash-attn, flash-attn-3 or flash-attn-4)"
    runs.append(packing)
    zero2 = {"name": "stage2 bf16 ZeRO-2", "recipe": "stage_2_llm_lora.yaml",
             "extra": {"deepspeed": {"enabled": True, "config": "zero2"}}, "torchrun": True}
    if not deepspeed:
        zero2["skip"] = "deepspeed is not installed (pip install -e '.[gpu]')"
    runs.append(zero2)
    # A long dense answer (48 objects): the logits over the 151,936-token vocabulary dominate a step's
    # memory; Liger's fused linear cross-entropy never materialises them.
    runs.append({"name": "stage2 dense48", "recipe": "stage_2_llm_lora.yaml", "extra": {}, "data": "dense"})
    dense_liger = {"name": "stage2 dense48 liger", "recipe": "stage_2_llm_lora.yaml", "data": "dense",
                   "extra": {"training": {"use_liger_kernel": True}}}
    if not liger:
        dense_liger["skip"] = "liger-kernel is not installed (pip install -e '.[gpu]')"
    runs.append(dense_liger)
    return runs


def write_dense_data(folder: Path, n: int = 64, objects: int = 48) -> Path:
    """`n` records of `objects` objects each (boxes and quads, unicode labels) over mixed-format images."""
    import random

    sys.path.insert(0, str(REPO / "bench"))
    from data_scale import dense_record, write_images

    images = write_images(folder / "images", 16)
    rng = random.Random(0)
    path = folder / "train.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            record = dense_record(rng, images[i % len(images)])
            while len(record["objects"]) < objects:
                record["objects"] += dense_record(rng, images[i % len(images)])["objects"]
            record["objects"] = record["objects"][:objects]
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


DEFAULT_LAYERS = {"30b-a3b": 12, "35b-a3b": 10}  # sizes whose whole language model does not fit the check machine


def family_keys(arch: str) -> dict:
    """The config keys that select a family: its model_type and ms-swift template (src/config/families.py)."""
    from src.config.families import FAMILIES

    return {"model": {"model_type": arch}, "template": {"template": FAMILIES[arch].template}}


def write_config(work: Path, run: dict, steps: int, cpu: bool = False, arch: str = "qwen3_vl") -> Path:
    """A run config extending the recipe, pointing at the work dir's model and data, for the family `arch`."""
    name = run["name"].replace(" ", "_")
    config = {
        "extends": str(REPO / "configs" / run["recipe"]),
        "model": {"model": str(work / "model"), "torch_dtype": "bfloat16", "attn_impl": "sdpa",
                  **family_keys(arch)["model"]},
        "template": family_keys(arch)["template"],
        "custom": {"train_jsonl": str(work / ("dense" if run.get("data") == "dense" else "data") / "train.jsonl"),
                   "health_check_samples": 2},
        "training": {"output_dir": str(work / "runs" / name), "max_steps": steps, "logging_steps": 1,
                     "per_device_train_batch_size": 4, "bf16": True, "eval_strategy": "no",
                     "save_strategy": "no", "report_to": [], "dataloader_num_workers": 2},
        "env": {"IMAGE_MAX_TOKEN_NUM": 1024},
    }
    if cpu:  # plumbing smoke test only: no speed is measured on CPU
        config["model"]["torch_dtype"] = "float32"
        config["training"].update({"bf16": False, "fp16": False, "use_cpu": True, "dataloader_num_workers": 0,
                                   "per_device_train_batch_size": 1})
        config["env"]["IMAGE_MAX_TOKEN_NUM"] = 64
    for section, values in run["extra"].items():
        config.setdefault(section, {}).update(values)
    path = work / f"{name}.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def launcher(n_gpus: int, force_torchrun: bool = False) -> list[str]:
    """The command prefix of one run: plain python on one GPU, torchrun across `n_gpus` otherwise
    (DeepSpeed runs always go through torchrun)."""
    if n_gpus <= 1 and not force_torchrun:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={max(1, n_gpus)}"]


def measure(run_dir: Path, mean_tokens: float, n_gpus: int) -> dict:
    """samples/s and tokens/s in all and per GPU, and rank 0's peak memory, from ms-swift's logging.jsonl
    (its samples/s counts every rank's samples)."""
    rows = [json.loads(x) for x in (run_dir / "logging.jsonl").read_text().splitlines() if x.strip()]
    final = next((r for r in reversed(rows) if "train_samples_per_second" in r), {})
    memory = max((float(str(r.get("memory(GiB)", 0)).split()[0]) for r in rows if "memory(GiB)" in r), default=0)
    samples = float(final.get("train_samples_per_second", 0))
    world = max(1, n_gpus)
    return {"samples_per_s": samples, "tokens_per_s": samples * mean_tokens,
            "tokens_per_s_per_gpu": samples * mean_tokens / world, "peak_memory_gib": memory}


class GpuMemoryPeaks:
    """Samples `nvidia-smi`'s used memory of every GPU while a run goes; `peaks` is GiB per GPU index."""

    def __init__(self, interval_s: float = 0.5):
        self.interval_s = interval_s
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self):
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            out = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True).stdout
            for line in out.splitlines():
                index, used = (part.strip() for part in line.split(","))
                self.peaks[int(index)] = max(self.peaks.get(int(index), 0.0), float(used) / 1024)


def visible_gpus() -> int:
    """Number of GPUs torch sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=REPO / "output" / "gpu_check")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--arch", default="qwen3_vl", choices=["qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe"])
    parser.add_argument("--size", default=None, help="tiny (a CPU smoke test), 2b, 4b (qwen3_vl), 30b-a3b "
                                                     "(qwen3_vl_moe), 9b (qwen3_5), 35b-a3b (qwen3_5_moe); default: "
                                                     "the arch's smallest published size")
    parser.add_argument("--layers", type=int, default=None, help="cut the language model to N layers")
    parser.add_argument("--gpus", type=int, default=None, help="GPUs to use (default: every visible one)")
    args = parser.parse_args()
    from src.tiny_model.model import ARCHS, tiny_config

    sizes = ARCHS[args.arch].sizes
    size = args.size or (sizes[1] if len(sizes) > 1 else "tiny")
    if size not in sizes:
        parser.error(f"--size {size} for --arch {args.arch}: valid {', '.join(sizes)}")
    layers = args.layers or DEFAULT_LAYERS.get(size)
    full_layers = tiny_config(size, args.arch).text_config.num_hidden_layers
    print(f"model: {args.arch} {size}, {layers or full_layers} of {full_layers} language-model layers")
    cpu = size == "tiny"
    n_gpus = 0 if cpu else (args.gpus if args.gpus is not None else visible_gpus())
    print(f"GPUs: {n_gpus} ({'torchrun across them, NCCL' if n_gpus > 1 else 'one process'})")
    work = args.work.resolve()
    marker = work / "model" / "tiny_model.json"
    built = json.loads(marker.read_text()) if marker.is_file() else {}
    if (built.get("arch", "qwen3_vl"), built.get("size", "tiny"), built.get("layers")) != (args.arch, size, layers):
        subprocess.run([sys.executable, "-m", "src.tiny_model", "--out", str(work / "model"), "--size", size,
                        "--arch", args.arch, "--overwrite", *(["--layers", str(layers)] if layers else [])],
                       cwd=REPO, check=True)
    if not (work / "data" / "train.jsonl").is_file():
        subprocess.run([sys.executable, "-m", "src.datasets", "synth", "--out", str(work / "data"), "--n", "256",
                        "--overwrite"], cwd=REPO, check=True)
    if not (work / "dense" / "train.jsonl").is_file():
        write_dense_data(work / "dense")
    flash, deepspeed, liger = flash_attention_impl(), _available("deepspeed"), _available("liger_kernel")
    print(f"flash attention: {flash or 'none installed: packing is not measured'}; "
          f"deepspeed: {'installed' if deepspeed else 'not installed: ZeRO-2 is not measured'}")
    results = {}
    for run in scenarios(flash, deepspeed, liger):
        if "skip" in run:
            print(f"skip {run['name']}: {run['skip']}")
            continue
        config = write_config(work, run, args.steps, cpu, args.arch)
        stats_dir = work / f"stats_{run.get('data', 'synth')}"  # token lengths of the data this run trains on
        if not (stats_dir / "stats.json").is_file():
            subprocess.run([sys.executable, "-m", "src.datasets", "stats", "--config", str(config), "--out",
                            str(stats_dir), "--limit", "64"], cwd=REPO, check=True, capture_output=True)
        mean_tokens = json.loads((stats_dir / "stats.json").read_text())["token_length"]["mean"]
        started = time.monotonic()
        with GpuMemoryPeaks() as peaks:
            proc = subprocess.run([*launcher(n_gpus, bool(run.get("torchrun"))), "-m", "src.sft", "--config",
                                   str(config)], cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"FAILED {run['name']} (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
            continue
        results[run["name"]] = {**measure(Path(json.loads(config.read_text())["training"]["output_dir"]),
                                          mean_tokens, n_gpus), "wall_s": time.monotonic() - started,
                                "gpu_peaks_gib": dict(sorted(peaks.peaks.items()))}
    baseline = results.get("stage2 bf16", {}).get("tokens_per_s") or None
    print(f"\n{'run':<24}{'samples/s':>10}{'tokens/s':>11}{'tok/s/GPU':>11}{'peak GiB':>10}{'wall s':>8}"
          f"{'vs stage2':>11}")
    for name, r in results.items():
        ratio = f"{r['tokens_per_s'] / baseline:.2f}x" if baseline else "-"
        print(f"{name:<24}{r['samples_per_s']:>10.2f}{r['tokens_per_s']:>11.0f}{r['tokens_per_s_per_gpu']:>11.0f}"
              f"{r['peak_memory_gib']:>10.1f}{r['wall_s']:>8.0f}{ratio:>11}")
        if r["gpu_peaks_gib"]:
            peaks = ", ".join(f"GPU{i} {gib:.1f} GiB" for i, gib in r["gpu_peaks_gib"].items())
            print(f"    peak per GPU (nvidia-smi): {peaks}")


if __name__ == "__main__":
    main()
