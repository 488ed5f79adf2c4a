"""GPU check in one call: what a GPU does with this project's runs, learnt from one prepared run of minutes.

    python bench/gpu_check.py [--budget_s 420] [--work DIR] [--out FILE.jsonl] [--size 2b] [--steps 10]
                              [--warmup_steps 2] [--arch qwen3_vl] [--layers N] [--gpus N] [--dense_objects 48]

Runs from any directory, with or without the project pip-installed (it puts the repository on its own
`sys.path` and on its child processes' PYTHONPATH). Needs no weights and no network: a randomly initialised
model of the published dimensions (built once per size and arch into `--work`, then reused) trains at the
speed the real one would. Scenarios, in order of value (each one skipped, saying why, where it cannot run):

 1. stage 2 dense: LoRA on dense 48-object answers over mixed images (the baseline of the ratios);
 2. the same with `custom.answer_only_logits` flipped (logits only where the loss is, off/on);
 3. a torch.profiler summary of three dense steps: top operators by self CUDA and self CPU time, data wait;
 4. Liger on (`training.use_liger_kernel`), where liger_kernel is installed and a GPU is there;
 5. `PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True` (a child process: the variable is read at CUDA start);
 6. packing with a flash-attention build, where one is installed;
 7. stage 1 (aligner) and 8. stage 2 on small samples (synthetic images, ~230 tokens);
 9. generation through ms-swift's transformers engine at batch 8 and at batch 64 (the same 64 questions), asked
    as `src.infer` asks (greedy, `logprobs=True`, `src.inference.fast_logprobs` installed);
10. raw ms-swift: its own `sft_main` on the dense records written as ms-swift rows, with the project's
    arguments (`to_sft_kwargs`); its row gives the project's samples/s over raw ms-swift's twice: the
    project's run as configured (answer-only logits on by default: a different logits path) and the run
    with `answer_only_logits=false` (ms-swift's full-logits path, as raw ms-swift: what the project's data
    path and callbacks cost or save per sample);
11. generation through vLLM, where installed; 12. ZeRO-2, where deepspeed is installed (a torchrun child).

Training runs go through `src.sft.main` in this process (start-up paid once: imports, CUDA context; data
verdicts and the model files are reused), except where a run needs its own process (several GPUs: torchrun;
DeepSpeed; the allocator variable). Speed is the steady state: the per-step figures of the run's
logging.jsonl after `--warmup_steps` steps (the project's step accounting: `step_time_s`, `tokens_per_s`,
`data_wait_share`, ...; without it, step times recovered from ms-swift's cumulative `train_speed(s/it)`).

Budget: everything (model build included) must end within `--budget_s`. Each scenario's figures are printed
and appended to the JSONL (`--out`; default a new `gpu_check-<run id>.jsonl` in `--work`; an existing `--out`
is appended to, each line carrying the run id) the moment they are measured (each generation batch size on its
own line); a scenario whose estimate (the start-up cost and step times measured so far) exceeds the time left
is skipped with both figures. The budget also stops what runs: an in-process training run ends after the step
during which the budget ran out (a TrainerCallback), a child process is ended when the time left runs out,
generation stops between batches of questions and skips a batch size once the time is spent; such a row has
status `stopped`, the reason, and the figures of the steps (or questions) done. A markdown table of every
scenario ends the output.

`--gpus N` limits the check to N GPUs: CUDA_VISIBLE_DEVICES is set to the first N before CUDA starts (where the
caller already set it, its first N; the environment row says which). Without it every visible GPU is used
(in-process runs on several GPUs would spread the model over them: ms-swift's device_map 'auto').

`--size tiny` runs the whole check on CPU with the tiny model (plumbing only: no speed is meaningful there);
any other size needs a CUDA GPU and is refused (exit 2) where none is visible.
`--arch` picks the family (qwen3_vl: 2b, 4b; qwen3_vl_moe: 30b-a3b; qwen3_5: 9b; qwen3_5_moe: 35b-a3b); the
MoEs run 12 of 48 / 10 of 40 language-model layers by default (`--layers`): their whole weights do not fit
the check machine's disk (tokens/s per layer is the real model's).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # the project need not be installed: `src` is imported from this checkout
    sys.path.insert(0, str(REPO))

FLASH_IMPLS = (("flash_attention_2", "flash_attn_2_cuda"), ("flash_attention_3", "flash_attn_interface"),
               ("flash_attention_4", "flash_attn.cute"))
DEFAULT_LAYERS = {"30b-a3b": 12, "35b-a3b": 10}  # sizes whose whole language model does not fit the check machine
PROFILED_STEPS = 3
SUBPROCESS_START_GUESS_S = 45.0  # a child's imports + CUDA start before one was measured (40-60 s seen on an H200)


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def flash_attention_impl() -> str | None:
    """The first flash-attention implementation whose package is installed, or None."""
    return next((impl for impl, module in FLASH_IMPLS if _available(module)), None)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with the repository first on PYTHONPATH (and `extra` set): a child process
    imports `src` from this checkout whether or not the project is installed."""
    env = dict(os.environ, **(extra or {}))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


# --- scenarios -------------------------------------------------------------------------------------------

@dataclass
class Scenario:
    """One measured thing: a training run (`kind` train/profile), or generation (generate/vllm)."""

    name: str
    kind: str = "train"
    recipe: str = "stage_2_llm_lora.yaml"
    data: str = "dense"  # dense | synth
    extra: dict = field(default_factory=dict)  # config sections merged over the recipe
    env: dict = field(default_factory=dict)  # set in a child process (allocator settings are read at CUDA start)
    child: bool = False  # needs its own process
    torchrun: bool = False
    batch_sizes: tuple[int, ...] = ()  # generation
    skip: str | None = None


@dataclass(frozen=True)
class Machine:
    """What the scenarios depend on: a GPU, installed packages, the config keys this checkout knows."""

    cuda: bool
    n_gpus: int
    flash: str | None
    liger: bool
    vllm: bool
    deepspeed: bool
    answer_only_default: bool | None  # None: this checkout has no custom.answer_only_logits key


def scenarios(machine: Machine) -> list[Scenario]:
    """Every scenario in order of value, those that cannot run here carrying the reason (`skip`)."""
    gpu_only = None if machine.cuda else "needs a CUDA GPU (this is the CPU plumbing run)"
    several = machine.n_gpus > 1
    runs = [Scenario("stage2 dense", child=several, torchrun=several)]
    flipped = Scenario("stage2 dense answer-only flipped", child=several, torchrun=several)
    if machine.answer_only_default is None:
        flipped.skip = ("the config key custom.answer_only_logits is unknown to this checkout "
                        "(src/config/schema.py CustomSection)")
    else:
        flipped.name = f"stage2 dense answer_only_logits={str(not machine.answer_only_default).lower()}"
        flipped.extra = {"custom": {"answer_only_logits": not machine.answer_only_default}}
    runs.append(flipped)
    profile = Scenario("profile 3 dense steps", kind="profile")
    if several:
        profile.skip = "profiled in one process only (run with --gpus 1)"
    runs.append(profile)
    liger = Scenario("stage2 dense liger", extra={"training": {"use_liger_kernel": True}}, child=several,
                     torchrun=several)
    liger.skip = gpu_only or (None if machine.liger else "liger_kernel is not installed")
    runs.append(liger)
    runs.append(Scenario("stage2 dense expandable_segments", child=True, torchrun=several,
                         env={"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}, skip=gpu_only))
    packing = Scenario("stage2 dense packing", child=several, torchrun=several,
                       extra={"training": {"packing": True, "lazy_tokenize": False},
                              "model": {"attn_impl": machine.flash}})
    packing.skip = gpu_only or (None if machine.flash else
                                "no flash-attention build installed (flash-attn, flash-attn-3 or flash-attn-4)")
    runs.append(packing)
    runs.append(Scenario("stage1 small samples", recipe="stage_1_full_aligner_only.yaml", data="synth",
                         child=several, torchrun=several))
    runs.append(Scenario("stage2 small samples", data="synth", child=several, torchrun=several))
    runs.append(Scenario("generation transformers", kind="generate", batch_sizes=(8, 64)))
    runs.append(Scenario("raw ms-swift stage2 dense", kind="raw", child=several, torchrun=several,
                         skip="torchrun across several GPUs: run with --gpus 1" if several else None))
    vllm = Scenario("generation vllm", kind="vllm", batch_sizes=(64,))
    vllm.skip = gpu_only or (None if machine.vllm else "vllm is not installed")
    runs.append(vllm)
    zero2 = Scenario("stage2 dense ZeRO-2", child=True, torchrun=True,
                     extra={"deepspeed": {"enabled": True, "config": "zero2"}})
    zero2.skip = gpu_only or (None if machine.deepspeed else "deepspeed is not installed")
    runs.append(zero2)
    return runs


# --- figures from a run's logging.jsonl --------------------------------------------------------------------

def _step(row: dict) -> int | None:
    text = row.get("global_step/max_steps")
    return int(str(text).split("/")[0]) if text else None


def _gib(row: dict, key: str) -> float | None:
    return float(str(row[key]).split()[0]) if row.get(key) is not None else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def steady_state(rows: list[dict], warmup_steps: int, samples_per_step: int,
                 mean_tokens: float | None = None) -> dict:
    """The run's figures over the steps after `warmup_steps` (its training log lines, one per step).

    Step times are the project's `step_time_s` where logged, else the differences of ms-swift's cumulative
    elapsed time (`train_speed(s/it)` x step). tokens/s is the logged `tokens_per_s` (real tokens), else
    `samples_per_step * mean_tokens` per second of step (`tokens_source` says which). `peak_memory_gib` is the
    largest logged `peak_memory_gib` (else ms-swift's `memory(GiB)`, CUDA reserved), `peak_reserved_gib`
    ms-swift's; `memory_by_step` shows the rise (reserved where logged). Shares and MFU are steady-state means of
    what the run logged (absent keys give None). Raises ValueError when no step is past the warm-up."""
    # ms-swift stamps its end-of-training summary (train_runtime, ...) with the last step too: not a step.
    steps = sorted(((_step(r), r) for r in rows if _step(r) is not None and "train_runtime" not in r),
                   key=lambda pair: pair[0])
    times: dict[int, float] = {}
    previous = (0, 0.0)
    for step, row in steps:
        if "step_time_s" in row:
            times[step] = float(row["step_time_s"])
        elif "train_speed(s/it)" in row:
            elapsed = float(row["train_speed(s/it)"]) * step
            times[step] = (elapsed - previous[1]) / max(1, step - previous[0])
            previous = (step, elapsed)
    steady = [(s, r) for s, r in steps if s > warmup_steps and s in times]
    if not steady:
        raise ValueError(f"no logged step after the {warmup_steps} warm-up steps (steps logged: "
                         f"{[s for s, _ in steps]}); run more --steps")
    s_per_step = _mean([times[s] for s, _ in steady])
    logged_tokens = [float(r["tokens_per_s"]) for _, r in steady if "tokens_per_s" in r]
    if logged_tokens:
        tokens_per_s, source = _mean(logged_tokens), "logged real tokens"
    elif mean_tokens:
        tokens_per_s, source = samples_per_step * mean_tokens / s_per_step, "estimated: samples x mean length"
    else:
        tokens_per_s, source = None, None

    def steady_mean(key: str) -> float | None:
        values = [float(r[key]) for _, r in steady if r.get(key) is not None]
        return round(_mean(values), 4) if values else None

    # The project's peak (CUDA max allocated; on CPU the process's peak resident set) and ms-swift's (CUDA max
    # reserved, GPU only): the allocator's growth as longer batches arrive shows in the reserved figure.
    allocated = [m for m in (_gib(r, "peak_memory_gib") for _, r in steps) if m is not None]
    reserved = [m for m in (_gib(r, "memory(GiB)") for _, r in steps) if m is not None]
    memory = reserved or allocated
    return {"steady_steps": len(steady), "first_step_s": round(times[steps[0][0]], 3) if steps[0][0] in times else None,
            "s_per_step": round(s_per_step, 4), "samples_per_s": round(samples_per_step / s_per_step, 3),
            "tokens_per_s": round(tokens_per_s, 1) if tokens_per_s else None, "tokens_source": source,
            "data_wait_share": steady_mean("data_wait_share"), "padding_share": steady_mean("padding_share"),
            "loss_token_share": steady_mean("loss_token_share"), "mfu": steady_mean("mfu"),
            "peak_memory_gib": max(allocated or reserved) if memory else None,
            "peak_reserved_gib": max(reserved) if reserved else None, "memory_by_step": memory,
            "train_time_s": round(sum(times.values()), 2)}


def read_logging(run_dir: Path) -> list[dict]:
    """The JSON lines of `run_dir/logging.jsonl` (ms-swift's training log)."""
    path = run_dir / "logging.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --- the budget --------------------------------------------------------------------------------------------

@dataclass
class Budget:
    """Time left, and estimates of a scenario from what the scenarios so far took."""

    total_s: float
    started: float = field(default_factory=time.monotonic)
    start_up_s: dict[str, float] = field(default_factory=dict)  # "process" / "child" / "generate": measured
    step_s: dict[str, float] = field(default_factory=dict)  # data kind -> steady s/step

    def left(self) -> float:
        """Seconds left of the budget (negative once spent)."""
        return self.total_s - (time.monotonic() - self.started)

    def estimate(self, run: Scenario, steps: int) -> tuple[float | None, str]:
        """(seconds, how) this scenario should take, or (None, why) before anything comparable was measured:
        the start-up cost of its kind of process plus `steps` steps at the step time of its data."""
        if run.kind in ("generate", "vllm"):
            if "generate" in self.start_up_s:
                return self.start_up_s["generate"], "as the generation measured before"
            if "process" not in self.start_up_s:
                return None, "nothing measured yet"
            return 2 * self.start_up_s["process"], "twice a training run's start-up (engine load + generation)"
        step = self.step_s.get(run.data) or max(self.step_s.values(), default=None)
        if step is None or "process" not in self.start_up_s:
            return None, "nothing measured yet"
        if run.child:
            start = self.start_up_s.get("child", self.start_up_s["process"] + SUBPROCESS_START_GUESS_S)
            how = "child start-up " + ("measured" if "child" in self.start_up_s else
                                       f"guessed: in-process start-up + {SUBPROCESS_START_GUESS_S:.0f} s")
        else:
            start, how = self.start_up_s["process"], "in-process start-up measured"
        return start + steps * step, f"{how} + {steps} steps x {step:.2f} s"


def budget_skip(estimate_s: float | None, how: str, left_s: float) -> str | None:
    """The reason to skip a scenario estimated at `estimate_s` with `left_s` seconds left, or None to run it.
    With nothing measured yet a scenario starts while any time is left (the budget then stops it where it
    runs past: `budget_callback`, `train_in_child`'s timeout, `run_generation`)."""
    if left_s <= 0:
        return f"budget spent ({-left_s:.0f} s over)"
    if estimate_s is not None and estimate_s > left_s:
        return f"would not finish in the {left_s:.0f} s left (estimate {estimate_s:.0f} s: {how})"
    return None


def budget_callback(budget: Budget):
    """A TrainerCallback that ends training after the step during which `budget` ran out; its `stopped` then
    says at which step (None while the run is within the budget)."""
    from transformers import TrainerCallback

    class StopAtTheBudget(TrainerCallback):
        stopped: str | None = None

        def on_step_end(self, args, state, control, **kwargs):
            if budget.left() <= 0 and state.global_step < state.max_steps and not self.stopped:
                control.should_training_stop = True
                self.stopped = (f"stopped at the budget after step {state.global_step} of {state.max_steps} "
                                f"({-budget.left():.0f} s over)")

    return StopAtTheBudget()


def gpu_selection(gpus: int | None, current: str | None) -> tuple[str | None, str | None]:
    """(the CUDA_VISIBLE_DEVICES value to set, or None to leave it as it is; a note saying what was chosen) for
    `--gpus` (None: every visible GPU) where `current` is the variable's value before the check (None: unset).
    A value the caller set is kept, narrowed to its first `gpus` entries where it lists more."""
    if gpus is None:
        return None, None if current is None else f"CUDA_VISIBLE_DEVICES={current!r} set before the check: kept"
    if current is None:
        return ",".join(str(i) for i in range(gpus)), f"--gpus {gpus}: CUDA_VISIBLE_DEVICES set to the first {gpus}"
    listed = [d.strip() for d in current.split(",") if d.strip()]
    if len(listed) <= gpus:
        return None, f"CUDA_VISIBLE_DEVICES={current!r} set before the check: kept (--gpus {gpus})"
    chosen = ",".join(listed[:gpus])
    return chosen, (f"CUDA_VISIBLE_DEVICES={current!r} set before the check: its first {gpus} kept "
                    f"({chosen!r}) for --gpus {gpus}")


def full_logits_scenario(answer_only_default: bool | None) -> str:
    """The measured scenario that runs ms-swift's full-logits path, as raw ms-swift does: the baseline where
    answer-only logits are off by default or unknown to this checkout, else the flipped run."""
    return "stage2 dense answer_only_logits=false" if answer_only_default else "stage2 dense"


def raw_comparison(rows: list[dict], raw_samples_per_s: float, answer_only_default: bool | None) -> dict:
    """The project's samples/s over raw ms-swift's (`raw_samples_per_s`), from the measured rows so far: for the
    project's run as configured (`project_over_raw`: with answer-only logits where on, a different logits path
    from raw ms-swift's) and for the run on ms-swift's full-logits path (`project_full_logits_over_raw`: the
    same model computation as raw ms-swift, so the ratio is what the project's data path and callbacks cost or
    save per sample), and a `note` saying which is which. A ratio whose run was not measured is None."""
    measured = {r["scenario"]: r for r in rows if r.get("status") == "measured" and r.get("samples_per_s")}

    def over_raw(name: str) -> float | None:
        return round(measured[name]["samples_per_s"] / raw_samples_per_s, 3) if name in measured else None

    full_name = full_logits_scenario(answer_only_default)
    project, full = over_raw("stage2 dense"), over_raw(full_name)
    on = "on" if answer_only_default else "off"

    def said(ratio: float | None) -> str:
        return "not measured" if ratio is None else f"{ratio:.2f}x"

    note = f"project / raw ms-swift samples/s: stage2 dense (answer-only logits {on}) {said(project)}"
    if full_name != "stage2 dense":
        note += (f"; {full_name} {said(full)} (ms-swift's full-logits path, as raw ms-swift: the data path's and "
                 f"callbacks' cost)")
    else:
        note += " (ms-swift's full-logits path, as raw ms-swift: the data path's and callbacks' cost)"
    return {"project_over_raw": project, "project_full_logits_over_raw": full, "note": note}


# --- output ------------------------------------------------------------------------------------------------

class Results:
    """Each result printed and appended to the JSONL the moment it is known; the table at the end."""

    def __init__(self, path: Path, run_id: str):
        self.path, self.run_id, self.rows = path, run_id, []
        path.parent.mkdir(parents=True, exist_ok=True)

    def add(self, row: dict) -> None:
        """Print `row` and append it (with the run id and the time) to the JSONL, flushed at once."""
        row = {"run_id": self.run_id, "time_utc": datetime.now(UTC).isoformat(timespec="seconds"), **row}
        self.rows.append(row)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        shown = {k: v for k, v in row.items() if k not in ("run_id", "time_utc", "memory_by_step", "top_ops")}
        print(f"[gpu_check] {json.dumps(shown, ensure_ascii=False)}", flush=True)


def _cell(value, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def markdown_table(rows: list[dict]) -> str:
    """Every scenario's figures as a markdown table; ratios against the first measured `stage2 dense`."""
    base = next((r.get("tokens_per_s") for r in rows if r.get("scenario") == "stage2 dense"
                 and r.get("status") == "measured"), None)
    lines = ["| scenario | status | s/step | tokens/s | vs stage2 dense | samples/s | peak GiB | GiB by step | "
             "data wait | padding | loss tokens | MFU | wall s | note |",
             "|" + "---|" * 14]
    for r in rows:
        if r.get("scenario") == "environment":
            continue
        ratio = (f"{r['tokens_per_s'] / base:.2f}x" if base and r.get("tokens_per_s") and r.get("kind") == "train"
                 else "-")
        memory = r.get("memory_by_step") or []
        rise = " -> ".join(f"{m:.1f}" for m in (memory if len(memory) <= 4 else [memory[0], *memory[-3:]]))
        note = r.get("reason") or r.get("note") or ""
        lines.append(f"| {r['scenario']} | {r['status']} | {_cell(r.get('s_per_step'), '{:.3f}')} | "
                     f"{_cell(r.get('tokens_per_s') or r.get('generated_tokens_per_s'), '{:.0f}')} | {ratio} | "
                     f"{_cell(r.get('samples_per_s'), '{:.2f}')} | "
                     f"{_cell(r.get('peak_memory_gib'), '{:.1f}')} | {rise or '-'} | "
                     f"{_cell(r.get('data_wait_share'), '{:.1%}')} | {_cell(r.get('padding_share'), '{:.1%}')} | "
                     f"{_cell(r.get('loss_token_share'), '{:.1%}')} | {_cell(r.get('mfu'), '{:.1%}')} | "
                     f"{_cell(r.get('wall_s'), '{:.0f}')} | {note.replace('|', '/')} |")
    return "\n".join(lines)


@contextlib.contextmanager
def output_to(path: Path):
    """Send this process's stdout and stderr (file descriptors 1 and 2, so C code and loggers too) to
    `path` for the duration: a run's own output goes to its log file, the check's lines stay readable."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("ab") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-chars:] if path.is_file() else ""


# --- preparing the model, the data and the configs ---------------------------------------------------------

def ensure_model(folder: Path, size: str, arch: str, layers: int | None) -> bool:
    """Build the random model of `size`/`arch`/`layers` into `folder` unless the one there is it (its
    tiny_model.json says so); True when it built. A folder without that marker is always built into."""
    marker = folder / "tiny_model.json"
    if marker.is_file():
        built = json.loads(marker.read_text())
        if (built.get("arch", "qwen3_vl"), built.get("size", "tiny"), built.get("layers")) == (arch, size, layers):
            return False
    from src.tiny_model.model import build_tiny_model  # heavy: torch, transformers

    build_tiny_model(folder, size=size, arch=arch, layers=layers, overwrite=True)
    return True


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


def ensure_data(work: Path, tiny: bool, dense_objects: int) -> dict[str, Path]:
    """The training JSONL of each data kind under `work`, written once and reused (its objects count is in
    the dense folder's name)."""
    from src.datasets.synth import write_synthetic_dataset

    synth = work / "data" / "train.jsonl"
    if not synth.is_file():
        write_synthetic_dataset(work / "data", n=16 if tiny else 256, overwrite=True)
    dense = work / f"dense{dense_objects}" / "train.jsonl"
    if not dense.is_file():
        write_dense_data(dense.parent, n=8 if tiny else 64, objects=dense_objects)
    return {"synth": synth, "dense": dense}


def family_keys(arch: str) -> dict:
    """The config keys that select a family: its model_type and ms-swift template (src/config/families.py)."""
    from src.config.families import FAMILIES

    return {"model": {"model_type": arch}, "template": {"template": FAMILIES[arch].template}}


def write_config(path: Path, run: Scenario, model: Path, train_jsonl: Path, output_dir: Path, steps: int,
                 cpu: bool = False, arch: str = "qwen3_vl") -> Path:
    """A run config at `path` extending the recipe (and configs/cpu.yaml when `cpu`) with the work dir's model
    and data, bf16 batch 4 on a GPU (float32 batch 1 on CPU), a log line per step, no saving, no evaluation."""
    recipe = str(REPO / "configs" / run.recipe)
    config = {
        "extends": [recipe, str(REPO / "configs" / "cpu.yaml")] if cpu else recipe,
        "model": {"model": str(model), **family_keys(arch)["model"],
                  **({} if cpu else {"torch_dtype": "bfloat16", "attn_impl": "sdpa"})},
        "template": family_keys(arch)["template"],
        "custom": {"train_jsonl": str(train_jsonl), "val_jsonl": None, "health_check_samples": 2},
        "training": {"output_dir": str(output_dir), "max_steps": steps, "logging_steps": 1,
                     "per_device_train_batch_size": 1 if cpu else 4, "gradient_accumulation_steps": 1,
                     "eval_strategy": "no", "save_strategy": "no", "report_to": [],
                     **({} if cpu else {"bf16": True, "dataloader_num_workers": 2})},
        "env": {"IMAGE_MAX_TOKEN_NUM": 64 if cpu else 1024},
    }
    for section, values in run.extra.items():
        config.setdefault(section, {}).update(values)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def mean_tokens_of(config: Path, out: Path) -> float | None:
    """Mean tokens per training sample of the config's data (the project's stats over its first 16 samples),
    kept in `out` and reused; None when it cannot be measured."""
    stats = out / "stats.json"
    if not stats.is_file():
        from src.datasets.__main__ import run as datasets_run

        with output_to(out.parent / f"{out.name}.log"):
            datasets_run(["stats", "--config", str(config), "--out", str(out), "--limit", "16", "--overwrite"])
    return json.loads(stats.read_text())["token_length"].get("mean")


def launcher(n_gpus: int, force_torchrun: bool = False) -> list[str]:
    """The command prefix of a child run: plain python on one GPU, torchrun across `n_gpus` otherwise
    (DeepSpeed runs always go through torchrun)."""
    if n_gpus <= 1 and not force_torchrun:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={max(1, n_gpus)}"]


# --- running the scenarios ---------------------------------------------------------------------------------

def _reset_device() -> None:
    """Free what the previous in-process run left and restart the peak counters: each run's peak is its own."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


@contextlib.contextmanager
def trainer_callbacks(callbacks):
    """Within the block, every ms-swift training run in this process (the project's `GroundingSft` and raw
    `SwiftSft` alike: the former's `train` ends in the latter's) gets `callbacks` (TrainerCallbacks)."""
    from swift.pipelines.train.sft import SwiftSft

    original = SwiftSft.train

    def train(self, trainer):
        for callback in callbacks:
            trainer.add_callback(callback)
        return original(self, trainer)

    SwiftSft.train = train
    try:
        yield
    finally:
        SwiftSft.train = original


def train_in_process(config: Path, log: Path, callbacks=(), budget: Budget | None = None) -> str | None:
    """`python -m src.sft --config CONFIG` in this process, its output to `log`; `callbacks` (TrainerCallbacks)
    join the trainer's, and with `budget` training ends after the step during which it ran out. Returns why it
    stopped early (None: it ran its steps). Raises RuntimeError naming the log on a non-zero exit."""
    from src import sft

    stop = budget_callback(budget) if budget is not None else None
    _reset_device()
    with trainer_callbacks([*callbacks, *([stop] if stop else [])]), output_to(log):
        code = sft.main(["--config", str(config)])
    if code != 0:
        raise RuntimeError(f"src.sft exited {code}; its output: {log}\n{_tail(log)}")
    return stop.stopped if stop else None


def end_process(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM `proc` (torchrun passes it on to its workers), then SIGKILL after `grace_s`."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def train_in_child(config: Path, log: Path, run: Scenario, n_gpus: int, timeout_s: float | None = None) -> str | None:
    """The run in its own process (torchrun across the GPUs where asked), with the scenario's environment,
    ended after `timeout_s` seconds (None: no limit). Returns why it stopped early (None: it finished).
    Raises RuntimeError naming the log on a non-zero exit."""
    with log.open("ab") as fh:
        proc = subprocess.Popen([*launcher(n_gpus, run.torchrun), "-m", "src.sft", "--config", str(config)],
                                cwd=REPO, env=child_env(run.env), stdout=fh, stderr=subprocess.STDOUT)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            end_process(proc)
            return f"stopped at the budget: the child process was ended after the {timeout_s:.0f} s left"
    if code != 0:
        raise RuntimeError(f"src.sft exited {code}; its output: {log}\n{_tail(log)}")
    return None


def train_raw_swift(config: Path, rows: Path, output_dir: Path, log: Path, budget: Budget | None = None) -> str | None:
    """ms-swift's own `sft_main` in this process on the config's training records written as ms-swift rows
    (`python -m src.datasets rows`: the same prompts, answers and upright images), with the arguments the
    project would pass (`to_sft_kwargs`; its swift_args name the image-budget plugin that only the project's
    set-up writes, so the resolved run's arguments cannot be used). Its model computation is ms-swift's
    full-logits path: compare it with the project's run with answer-only logits off (`raw_comparison`).
    With `budget`, training ends after the step during which it ran out; returns why it stopped early."""
    from src.config import to_sft_kwargs
    from src.datasets.__main__ import run as datasets_run
    from src.datasets.run_config import load_config_for_run

    cfg = load_config_for_run(config)
    stop = budget_callback(budget) if budget is not None else None
    _reset_device()
    with output_to(log):
        datasets_run(["rows", "--config", str(config), "--split", "train", "--out", str(rows)])
        from swift import SftArguments, sft_main

        with trainer_callbacks([stop] if stop else []):
            sft_main(SftArguments(**{**to_sft_kwargs(cfg), "dataset": [str(rows)], "val_dataset": [],
                                     "output_dir": str(output_dir)}))
    return stop.stopped if stop else None


def profiler_callback(profiler):
    """A TrainerCallback that starts `profiler` when training begins (model load and data set-up stay out of
    it), steps its schedule at the end of each optimizer step and stops it when training ends."""
    from transformers import TrainerCallback

    class StepTheProfiler(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            profiler.start()

        def on_step_end(self, args, state, control, **kwargs):
            profiler.step()

        def on_train_end(self, args, state, control, **kwargs):
            profiler.stop()

    return StepTheProfiler()


def profile_summary(events, cuda: bool, top: int = 8) -> dict:
    """Top operators by self CUDA time (on a GPU) and by self CPU time, and the share of the profiled
    wall time spent in the DataLoader's `__next__`, from a profiler's `key_averages()`."""
    def ranked(attr: str) -> list[dict]:
        rows = sorted(events, key=lambda e: getattr(e, attr, 0) or 0, reverse=True)[:top]
        return [{"op": e.key, "self_ms": round((getattr(e, attr, 0) or 0) / 1000, 2), "calls": e.count} for e in rows]

    return {"top_self_cpu": ranked("self_cpu_time_total"),
            **({"top_self_cuda": ranked("self_device_time_total")} if cuda else {})}


def run_profile(config: Path, log: Path, warmup_steps: int, cuda: bool,
                budget: Budget | None = None) -> tuple[dict, str | None]:
    """Three steady dense steps under torch.profiler (after `warmup_steps`): the top operators and the
    data-wait share (time blocked in the DataLoader's `__next__` over the three steps' wall time); and why
    training stopped early at the `budget` (None: it ran its steps)."""
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    # The profiler's step k is training step k+1. Steps 1..warmup_steps-1 wait, step `warmup_steps` warms the
    # profiler up (its events are dropped), the next PROFILED_STEPS are recorded.
    prof = profile(activities=activities, schedule=schedule(wait=warmup_steps - 1, warmup=1, active=PROFILED_STEPS,
                                                            repeat=1))
    started = time.perf_counter()
    stopped = train_in_process(config, log, [profiler_callback(prof)], budget)
    wall = time.perf_counter() - started
    if cuda:
        torch.cuda.synchronize()
    recorded = prof.profiler is not None  # None: stopped at the budget before the profiler's warm-up step
    events = prof.key_averages() if recorded else []
    trace = prof.events() if recorded else []
    waits = [e for e in events if "DataLoader" in e.key and "__next__" in e.key]
    wait_us = sum(e.cpu_time_total for e in waits)
    # The three profiled steps' span: from the trace's events (the whole call also holds start-up).
    span_us = max((e.time_range.end for e in trace), default=0) - min((e.time_range.start for e in trace), default=0)
    return {**profile_summary(events, cuda), "data_wait_share": round(wait_us / span_us, 4) if span_us else None,
            "profiled_span_s": round(span_us / 1e6, 3), "wall_s_run": round(wall, 1)}, stopped


def run_generation(config: Path, model: Path, batch_sizes: tuple[int, ...], max_new_tokens: int,
                   backend: str, questions: int, budget: Budget | None = None):
    """The same `questions` dense questions (the config's records, repeated) answered at each batch size
    through one engine, loaded once, asked as `src.infer` asks (`src.inference.engine.predict`: greedy,
    `logprobs=True` for the objects' scores, `fast_logprobs.install()`): yields each batch size's figures as
    they are measured (generated tokens per second, peak memory, the tokens that came with a log-probability;
    the same work at each size, so their ratio is what batching gains).

    With `budget`, a batch size stops between its generate calls once the budget is spent (its figures then
    cover the questions answered and carry `stopped`), and a later batch size is skipped (a dict with
    `skipped`: the reason) when the time left is spent or under what the previous batch size took."""
    import torch
    from swift import RequestConfig

    from src.datasets.loading import load_shards
    from src.datasets.plan import make_preprocessor
    from src.datasets.run_config import load_config_for_run
    from src.inference import engine as inference
    from src.inference.fast_logprobs import install
    from src.inference.scoring import response_token_logprobs

    cfg = load_config_for_run(config)
    records = load_shards([Path(cfg.custom.train_jsonl)], cfg.custom.bad_records)[1]
    records = [records[i % len(records)] for i in range(questions)]
    _, requests = inference.questions(records, make_preprocessor(cfg).builder)
    requests = [inference.as_seen(r) for r in requests]
    install()  # as predict does: the answers' log-probabilities without sorting the vocabulary per token
    started = time.perf_counter()
    batch_kwarg = ({"batch_size": max(batch_sizes)}
                   if "batch_size" in inspect.signature(inference.make_engine).parameters else {})
    engine = inference.make_engine(backend, cfg, model, **batch_kwarg)
    load_s = time.perf_counter() - started
    request_config = RequestConfig(max_tokens=max_new_tokens, temperature=0.0, logprobs=True)  # as predict's
    previous: tuple[int, float] | None = None
    for batch in batch_sizes:
        left = budget.left() if budget is not None else None
        if previous is not None and left is not None and (left <= 0 or previous[1] > left):
            yield {"batch_size": batch, "skipped": f"budget spent ({-left:.0f} s over)" if left <= 0 else
                   f"would not finish in the {left:.0f} s left (estimate {previous[1]:.0f} s: batch "
                   f"{previous[0]} over the same questions)"}
            continue
        _reset_device()
        if hasattr(engine, "max_batch_size"):
            engine.max_batch_size = batch  # the transformers engine: questions per generate() call
        started = time.perf_counter()
        responses, stopped = [], None
        for start in range(0, len(requests), batch):
            if start and budget is not None and budget.left() <= 0:
                stopped = f"stopped at the budget after {start} of {len(requests)} questions"
                break
            responses += engine.infer(requests[start:start + batch], request_config, use_tqdm=False)
        seconds = time.perf_counter() - started
        tokens = sum(r.usage.completion_tokens for r in responses)
        scored = sum(len(response_token_logprobs(r.choices[0].logprobs)[1]) for r in responses)
        peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
        previous = (batch, seconds)
        yield {"batch_size": batch, "questions": len(responses), "generated_tokens": tokens,
               "logprob_tokens": scored, "generation_s": round(seconds, 2),
               "generated_tokens_per_s": round(tokens / seconds, 1),
               "peak_memory_gib": round(peak, 2) if peak else None, "engine_load_s": round(load_s, 1),
               **({"stopped": stopped} if stopped else {})}
    del engine


def visible_gpus() -> int:
    """Number of GPUs torch sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def answer_only_default(config: Path) -> bool | None:
    """The config's `custom.answer_only_logits` (None where this checkout has no such key)."""
    from src.config import load_project_config

    return getattr(load_project_config(config, check_paths=False).custom, "answer_only_logits", None)


def build_parser() -> argparse.ArgumentParser:
    """The check's flags."""
    parser = argparse.ArgumentParser(prog="python bench/gpu_check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--budget_s", type=float, default=420, help="seconds for everything, start-up included")
    parser.add_argument("--work", type=Path, default=REPO / "output" / "gpu_check",
                        help="model, data and runs (reused across calls)")
    parser.add_argument("--out", type=Path, help="results JSONL, appended to (default: a new file in --work)")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per training run")
    parser.add_argument("--warmup_steps", type=int, default=2, help="first steps left out of the speed")
    parser.add_argument("--max_new_tokens", type=int, help="tokens generated per question (default 256; tiny 8)")
    parser.add_argument("--generation_questions", type=int,
                        help="questions answered at each generation batch size (default 64; tiny 16)")
    parser.add_argument("--dense_objects", type=int, default=48, help="objects per dense record")
    parser.add_argument("--arch", default="qwen3_vl", choices=["qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe"])
    parser.add_argument("--size", default=None, help="tiny (the CPU plumbing run), 2b, 4b (qwen3_vl), 30b-a3b "
                                                     "(qwen3_vl_moe), 9b (qwen3_5), 35b-a3b (qwen3_5_moe); default: "
                                                     "the arch's smallest published size")
    parser.add_argument("--layers", type=int, default=None, help="cut the language model to N layers")
    parser.add_argument("--gpus", type=int, default=None, help="GPUs to use (default: every visible one)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run every scenario that fits the budget; 0 when the check itself ran (a failed scenario is a result),
    2 for a refused argument (a non-tiny --size without a CUDA GPU among them)."""
    args = build_parser().parse_args(argv)
    budget = Budget(args.budget_s)
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + f"-{os.getpid()}"
    work = args.work.resolve()
    out = (args.out or work / f"gpu_check-{run_id}.jsonl").resolve()
    if args.warmup_steps < 1 or args.steps <= args.warmup_steps:
        build_parser().error(f"--steps {args.steps} must exceed --warmup_steps {args.warmup_steps} (>= 1)")
    if args.gpus is not None and args.gpus < 1:
        build_parser().error(f"--gpus {args.gpus}: at least 1")
    # Before anything starts CUDA (the driver reads the variable once): --gpus N uses N GPUs, also in-process
    # runs, which would otherwise spread the model over every visible GPU (ms-swift's device_map 'auto').
    devices, gpus_note = gpu_selection(args.gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices
    if gpus_note:
        print(f"[gpu_check] {gpus_note}", flush=True)
    os.environ["PYTHONPATH"] = child_env()["PYTHONPATH"]  # children of children (torchrun's) find `src` too
    from src.config.offline import apply_offline_env

    apply_offline_env()
    from src.tiny_model.model import ARCHS, tiny_config

    sizes = ARCHS[args.arch].sizes
    size = args.size or (sizes[1] if len(sizes) > 1 else "tiny")
    if size not in sizes:
        build_parser().error(f"--size {size} for --arch {args.arch}: valid {', '.join(sizes)}")
    cpu = size == "tiny"
    visible = visible_gpus()
    if not cpu and not visible:
        print(f"error: --size {size} needs a CUDA GPU and none is visible (CUDA_VISIBLE_DEVICES="
              f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}); its GPU configuration on CPU would take hours. "
              f"--size tiny runs the check's plumbing on CPU", file=sys.stderr)
        return 2
    args.max_new_tokens = args.max_new_tokens or (8 if cpu else 256)
    args.generation_questions = args.generation_questions or (16 if cpu else 64)
    layers = args.layers or DEFAULT_LAYERS.get(size)
    full_layers = tiny_config(size, args.arch).text_config.num_hidden_layers
    results = Results(out, run_id)
    print(f"[gpu_check] results: {out}; budget {args.budget_s:.0f} s", flush=True)

    started = time.monotonic()
    built = ensure_model(work / "model", size, args.arch, layers)
    data = ensure_data(work, cpu, args.dense_objects)
    n_gpus = 0 if cpu else visible
    runs_dir = work / "runs" / run_id
    probe = write_config(runs_dir / "configs" / "probe.yaml", Scenario("probe"), work / "model", data["dense"],
                         runs_dir / "probe", args.steps, cpu, args.arch)
    machine = Machine(cuda=n_gpus > 0, n_gpus=n_gpus, flash=flash_attention_impl(), liger=_available("liger_kernel"),
                      vllm=_available("vllm"), deepspeed=_available("deepspeed"),
                      answer_only_default=answer_only_default(probe))
    import torch

    results.add({"scenario": "environment", "status": "info", "arch": args.arch, "size": size,
                 "layers": f"{layers or full_layers} of {full_layers}", "python": sys.version.split()[0],
                 "torch": torch.__version__, "device": torch.cuda.get_device_name(0) if n_gpus else "cpu",
                 "gpus": n_gpus, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                 **({"gpus_note": gpus_note} if gpus_note else {}),
                 "flash_attention": machine.flash, "liger": machine.liger, "vllm": machine.vllm,
                 "deepspeed": machine.deepspeed, "answer_only_logits_default": machine.answer_only_default,
                 "pytorch_cuda_alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
                 "model_built_s": round(time.monotonic() - started, 1) if built else 0.0, "steps": args.steps,
                 "warmup_steps": args.warmup_steps, "work": str(work)})
    samples_per_step = (1 if cpu else 4) * max(1, n_gpus)
    mean_tokens: dict[str, float | None] = {}
    for run in scenarios(machine):
        row = {"scenario": run.name, "kind": "train" if run.kind in ("train", "raw") else run.kind}
        steps = args.warmup_steps + PROFILED_STEPS if run.kind == "profile" else args.steps
        if run.skip:
            results.add({**row, "status": "skipped", "reason": run.skip})
            continue
        estimate, how = budget.estimate(run, steps)
        reason = budget_skip(estimate, how, budget.left())
        if reason:
            results.add({**row, "status": "skipped", "reason": reason})
            continue
        slug = run.name.replace(" ", "_").replace("=", "-")
        log = runs_dir / f"{slug}.log"
        config = write_config(runs_dir / "configs" / f"{slug}.yaml", run, work / "model", data[run.data],
                              runs_dir / slug, steps, cpu, args.arch)
        started = time.monotonic()
        try:
            if run.kind in ("generate", "vllm"):
                for figures in run_generation(config, work / "model", run.batch_sizes, args.max_new_tokens,
                                              "vllm" if run.kind == "vllm" else "transformers",
                                              args.generation_questions, budget):
                    named = {**row, "scenario": f"{run.name} batch {figures['batch_size']}"}
                    if "skipped" in figures:
                        results.add({**named, "status": "skipped", "reason": figures["skipped"]})
                        continue
                    stopped = figures.pop("stopped", None)
                    results.add({**named, "status": "stopped" if stopped else "measured", **figures,
                                 "wall_s": round(figures["generation_s"], 1),
                                 **({"reason": stopped} if stopped else {}),
                                 "note": f"{figures['generated_tokens_per_s']:.0f} generated tokens/s over "
                                         f"{figures['questions']} questions, with log-probabilities as src.infer"})
                budget.start_up_s.setdefault("generate", time.monotonic() - started)  # engine load + every size
                continue
            if run.kind == "profile":
                figures, stopped = run_profile(config, log, args.warmup_steps, machine.cuda, budget)
                try:
                    steady = steady_state(read_logging(runs_dir / slug), args.warmup_steps, samples_per_step)
                except ValueError as err:
                    if not stopped:
                        raise
                    steady, stopped = {"data_wait_share": None}, f"{stopped}: {err}"
                figures.update({k: v for k, v in steady.items()
                                if k in ("s_per_step", "peak_memory_gib")})
                figures["data_wait_share_logged"] = steady["data_wait_share"]
                top = figures["top_self_cuda" if machine.cuda else "top_self_cpu"][:3]
                results.add({**row, "status": "stopped" if stopped else "measured", **figures,
                             "wall_s": round(time.monotonic() - started, 1), **({"reason": stopped} if stopped else {}),
                             "note": "top self " + ("CUDA" if machine.cuda else "CPU") + ": "
                                     + ", ".join(f"{t['op']} {t['self_ms']:.0f} ms" for t in top)})
                continue
            if run.kind == "raw":
                stopped = train_raw_swift(config, runs_dir / "raw_rows" / "train.jsonl", runs_dir / slug, log, budget)
            elif run.child:
                stopped = train_in_child(config, log, run, n_gpus, timeout_s=max(1.0, budget.left()))
            else:
                stopped = train_in_process(config, log, budget=budget)
            wall = time.monotonic() - started
            logged = read_logging(runs_dir / slug) if (runs_dir / slug / "logging.jsonl").is_file() else []
            try:
                if run.data not in mean_tokens and logged:
                    mean_tokens[run.data] = (None if "tokens_per_s" in logged[0]
                                             else mean_tokens_of(config, work / f"stats_{data[run.data].parent.name}"))
                figures = steady_state(logged, args.warmup_steps, samples_per_step, mean_tokens.get(run.data))
            except ValueError as err:  # stopped before a step past the warm-up: the row says so, without speed
                if not stopped:
                    raise
                figures, stopped = {}, f"{stopped}: {err}"
            if not stopped:  # a stopped run's time is not its steps': no estimate from it
                budget.step_s.setdefault(run.data, figures["s_per_step"])
                budget.start_up_s.setdefault("child" if run.child else "process",
                                             max(0.0, wall - figures["train_time_s"]))
            if run.kind == "raw" and figures:
                comparison = raw_comparison(results.rows, figures["samples_per_s"], machine.answer_only_default)
                row.update(comparison)
            start_up = {"start_up_s": round(max(0.0, wall - figures["train_time_s"]), 1)} if figures else {}
            results.add({**row, "status": "stopped" if stopped else "measured", **figures, "wall_s": round(wall, 1),
                         **start_up, **({"reason": stopped} if stopped else {}),
                         **({"env": run.env} if run.env else {}), **({"config": run.extra} if run.extra else {})})
        except Exception as err:  # a failed scenario is a result; the next ones still run
            results.add({**row, "status": "failed", "wall_s": round(time.monotonic() - started, 1),
                         "reason": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300],
                         "log": str(log), "traceback": traceback.format_exc()[-2000:]})
    print(f"\n## GPU check {run_id} ({args.arch} {size}, {machine.n_gpus} GPU; {budget.total_s - budget.left():.0f} s "
          f"of {budget.total_s:.0f} s)\n")
    print(markdown_table(results.rows))
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
