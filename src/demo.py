"""The demo (`make demo`): tiny model -> synthetic data -> stage 1 -> stage 2 -> infer -> eval -> vis, on CPU,
then the learning proof (the tiny model memorises four images and predicts them back). `--grpo` adds stage 3
(GRPO with the grounding rewards) after stage 2.

Assets (model, data) are built once into `output/demo-assets/`. Each demo run gets its own
directory `output/demo/<time>/` holding the two stage configs it used, both runs, and the
predictions, so a second demo never overwrites the first.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from src.tiny_model.model import BUILDER_VERSION, MARKER_FILE

REPO = Path(__file__).resolve().parent.parent
DEMO_CONFIGS = REPO / "configs" / "demo"


def _run(step: str, argv: list[str]) -> None:
    print(f"\n== {step}: {' '.join(argv)}", flush=True)
    started = time.monotonic()
    subprocess.run([sys.executable, *argv], cwd=REPO, check=True)
    print(f"== {step} done in {time.monotonic() - started:.0f} s", flush=True)


def _write_stage_config(path: Path, extends: Path, overrides: str) -> Path:
    path.write_text(f"# Written by the demo for this run.\nextends: {extends}\n{overrides}", encoding="utf-8")
    return path


def ensure_assets(assets: Path, n_records: int) -> None:
    """Build the tiny model and the synthetic data sets into `assets` unless they are already there (a tiny
    model from an older builder is built again)."""
    marker = assets / "tiny_model" / MARKER_FILE
    built = json.loads(marker.read_text()).get("builder_version") if marker.is_file() else None
    if built != BUILDER_VERSION:
        _run("tiny model", ["-m", "src.tiny_model", "--out", str(assets / "tiny_model"), "--overwrite"])
    if not (assets / "data" / "train.jsonl").is_file():
        _run("synthetic data", ["-m", "src.datasets", "synth", "--out", str(assets / "data"), "--n",
                                str(n_records), "--overwrite"])
    if not (assets / "memorise" / "train.jsonl").is_file():
        _run("synthetic data to memorise", ["-m", "src.datasets", "synth", "--out", str(assets / "memorise"),
                                            "--n", "5", "--overwrite"])


def evaluate(name: str, config: Path, checkpoint: Path, records: Path, out_dir: Path) -> dict[str, Path]:
    """infer -> eval -> vis of `checkpoint` on `records`; returns where predictions, metrics and pictures are."""
    outputs = {"predictions": out_dir / f"{name}_predictions.jsonl", "metrics": out_dir / f"{name}_metrics.json",
               "pictures": out_dir / f"{name}_vis"}
    _run(f"inference ({name})", ["-m", "src.infer", "--config", str(config), "--checkpoint", str(checkpoint),
                                 "--jsonl", str(records), "--out", str(outputs["predictions"]),
                                 "--max_new_tokens", "256"])
    _run(f"evaluation ({name})", ["-m", "src.eval", "--pred", str(outputs["predictions"]), "--gt", str(records),
                                  "--out", str(outputs["metrics"])])
    _run(f"pictures ({name})", ["-m", "src.vis", "--gt", str(records), "--pred", str(outputs["predictions"]),
                                "--out", str(outputs["pictures"])])
    return outputs


def run_demo(output_root: Path, n_records: int, memorise: bool = True, grpo: bool = False) -> Path:
    """Run the whole demo into a new directory under `output_root`/demo and return that directory;
    `grpo` adds stage 3 (GRPO from the stage-2 adapter) and its evaluation."""
    assets = output_root / "demo-assets"
    ensure_assets(assets, n_records)
    run_dir = output_root / "demo" / datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    run_dir.mkdir(parents=True)
    model = f"model:\n  model: {assets / 'tiny_model'}\n"
    data = (f"custom:\n  train_jsonl: {assets / 'data' / 'train.jsonl'}\n"
            f"  val_jsonl: {assets / 'data' / 'val.jsonl'}\n")
    stage1 = _write_stage_config(run_dir / "stage1.yaml", DEMO_CONFIGS / "stage1.yaml",
                                 f"{model}{data}training:\n  output_dir: ./stage1\n")
    _run("stage 1 (aligner, full)", ["-m", "src.sft", "--config", str(stage1)])
    stage2 = _write_stage_config(run_dir / "stage2.yaml", DEMO_CONFIGS / "stage2.yaml",
                                 f"model:\n  model: ./stage1/last-checkpoint\n{data}"
                                 "training:\n  output_dir: ./stage2\n")
    _run("stage 2 (LLM LoRA + aligner)", ["-m", "src.sft", "--config", str(stage2)])
    results = {"stage 2 on the validation split": evaluate(
        "stage2", stage2, run_dir / "stage2" / "last-checkpoint", assets / "data" / "val.jsonl", run_dir)}
    if grpo:
        stage3 = _write_stage_config(run_dir / "stage3.yaml", DEMO_CONFIGS / "stage3.yaml",
                                     f"model:\n  model: ./stage1/last-checkpoint\nrun:\n  init_from: "
                                     f"./stage2/last-checkpoint\n{data}training:\n  output_dir: ./stage3\n")
        _run("stage 3 (GRPO with grounding rewards)", ["-m", "src.sft", "--config", str(stage3)])
        results["stage 3 on the validation split"] = evaluate(
            "stage3", stage3, run_dir / "stage3" / "last-checkpoint", assets / "data" / "val.jsonl", run_dir)
    if memorise:
        config = _write_stage_config(run_dir / "memorise.yaml", DEMO_CONFIGS / "memorise.yaml",
                                     f"{model}custom:\n  train_jsonl: {assets / 'memorise' / 'train.jsonl'}\n"
                                     f"  val_jsonl: {assets / 'memorise' / 'train.jsonl'}\n"
                                     "training:\n  output_dir: ./memorise\n")
        _run("learning proof: memorise 4 images", ["-m", "src.sft", "--config", str(config)])
        results["learning proof on the memorised images"] = evaluate(
            "memorise", config, run_dir / "memorise" / "last-checkpoint", assets / "memorise" / "train.jsonl",
            run_dir)
    print("\n== demo outputs")
    print(f"tiny model:          {assets / 'tiny_model'}")
    print(f"data:                {assets / 'data'} (train.jsonl, val.jsonl, images/)")
    print(f"stage 1 checkpoint:  {(run_dir / 'stage1' / 'last-checkpoint').resolve()}")
    print(f"stage 2 adapter:     {(run_dir / 'stage2' / 'last-checkpoint').resolve()}")
    if grpo:
        print(f"stage 3 adapter:     {(run_dir / 'stage3' / 'last-checkpoint').resolve()}")
    for title, outputs in results.items():
        print(f"{title}:")
        print(f"  predictions:       {outputs['predictions']}")
        print(f"  metrics:           {outputs['metrics']}")
        print(f"  pictures:          {outputs['pictures'] / 'index.html'}")
    print(f"loss curves:         {run_dir}/*/loss_curves.png")
    print(f"resolved configs:    {run_dir}/*/resolved_config.yaml")
    return run_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "output", help="where assets and runs go")
    parser.add_argument("--n", type=int, default=24, help="synthetic records to generate (first build only)")
    parser.add_argument("--no-memorise", dest="memorise", action="store_false",
                        help="skip the learning proof (the tiny model memorising 4 images, about 90 s)")
    parser.add_argument("--grpo", action="store_true",
                        help="add stage 3: GRPO with the grounding rewards from the stage-2 adapter (about 40 s)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        run_demo(args.output.resolve(), args.n, args.memorise, args.grpo)
    except subprocess.CalledProcessError as err:
        print(f"demo failed: a step exited with code {err.returncode}", file=sys.stderr)
        return err.returncode
    print(f"demo finished in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
