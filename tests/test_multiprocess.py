"""Several processes on CPU, for real: torchrun (gloo) through scripts/train.sh, two nodes on one machine,
failures on one rank, kill and resume, warm start. The real ms-swift on the tiny model; nothing mocked.

DeepSpeed runs live in tests/test_deepspeed_runs.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file

from src.config import load_project_config
from src.datasets.augment import parse_augment_ops
from src.datasets.plan import data_seed, plan_data
from src.datasets.rows import GroundingRowsDataset, answer_digest
from tests.support.multiprocess import (
    free_port,
    launch,
    losses_by_step,
    mount_namespace_available,
    train_sh,
    write_run_config,
)

pytestmark = pytest.mark.slow


def test_two_cpu_processes_train_a_gpu_recipe_once_through_the_launcher(mp_workspace, tmp_path):
    """gpus=cpu nproc=2 on the stage-2 GPU recipe (bf16), from another directory: set-up once, every
    sample trained each epoch, augmentation draws independent of the ranks."""
    root = mp_workspace
    config = write_run_config(tmp_path, "ddp", recipe="stage_2_llm_lora.yaml", cpu=False, workspace=root,
                              custom={"augment_prob": 1.0, "augment": [{"op": "hflip", "p": 0.5}]},
                              training={"num_train_epochs": 2, "max_steps": -1, "save_strategy": "epoch"})
    samples = tmp_path / "samples"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = train_sh([f"config={config}", "gpus=cpu", "nproc=2", f"master_port={free_port()}"], cwd=elsewhere,
                    env={"GROUNDING_SAMPLE_LOG": str(samples)})
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-4000:]
    run = tmp_path / "ddp"

    # Set-up ran once: one report, one health verdict, the CPU overrides printed with their reasons.
    assert out.count("== resolved config") == 1 and out.count("health check: the first") == 1
    assert out.count("== CPU overrides") == 1
    assert "validation: once, by rank 0; every other rank read its verdict" in out
    assert 'model.torch_dtype: "bfloat16" -> "float32"' in out and "bf16/fp16 kernels are GPU-only" in out
    resolved = (run / "resolved_config.yaml").read_text()
    assert "# CPU overrides" in resolved and "torch_dtype: float32" in resolved and "use_cpu: true" in resolved
    assert (run / "checkpoint-10" / "adapter_model.safetensors").is_file()  # 9 samples -> 5 steps per epoch
    assert out.count("1 of them are repeated each epoch") == 1
    assert len(list((run / "logs").glob("train-*-rank0.log"))) == 1

    # Every training sample once per epoch, split evenly across the two ranks (one repeated: 9 samples).
    cfg = load_project_config(run / "resolved_config.yaml")
    plan = plan_data(cfg)
    n = len(plan.train_samples)
    lines = [json.loads(x) for r in (0, 1) for x in (samples / f"samples-rank{r}.jsonl").read_text().splitlines()]
    assert {line["rank"] for line in lines} == {0, 1}
    for epoch in (0, 1):
        seen = Counter(line["index"] for line in lines if line["epoch"] == epoch)
        assert set(seen) == set(range(n)), f"epoch {epoch}: {sorted(seen)}"
        assert sum(seen.values()) == n + (n % 2)
        per_rank = Counter(line["rank"] for line in lines if line["epoch"] == epoch)
        assert per_rank[0] == per_rank[1]

    # The augmentation draw of (seed, epoch, index) is what one process computes alone.
    dataset = GroundingRowsDataset(plan.train_samples, plan.builder,
                                   augment_ops=parse_augment_ops(cfg.custom.augment),
                                   augment_prob=cfg.custom.augment_prob, seed=data_seed(cfg))
    expected = {}
    for epoch in (0, 1):
        dataset.epoch = epoch
        expected.update({(epoch, i): answer_digest(dataset.row(i)) for i in range(n)})
    assert len(set(expected.values())) > n  # the draws differ between epochs: the check has teeth
    for line in lines:
        assert line["answer_sha1"] == expected[(line["epoch"], line["index"])], line


def test_two_launchers_form_a_two_node_job(mp_workspace, tmp_path):
    root = mp_workspace
    config = write_run_config(tmp_path, "nodes", workspace=root, training={"max_steps": 2})
    port = free_port()
    nodes = [launch([f"config={config}", "gpus=cpu", "nproc=1", "nnodes=2", f"node_rank={rank}",
                     "master_addr=127.0.0.1", f"master_port={port}"], cwd=tmp_path) for rank in (0, 1)]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert outputs[0].count("== resolved config") == 1 and "== resolved config" not in outputs[1]
    assert "world_size: 2" in outputs[0] + outputs[1]
    logs = sorted(p.name.rsplit("-", 1)[1] for p in (tmp_path / "nodes" / "logs").glob("train-*.log"))
    assert logs == ["rank0.log", "rank1.log"]
    assert (tmp_path / "nodes" / "checkpoint-2" / "adapter_model.safetensors").is_file()


@pytest.mark.skipif(not mount_namespace_available(), reason="needs `unshare -m` (root) to hide a directory")
def test_a_node_that_cannot_see_the_run_directory_is_named_not_a_hang(mp_workspace, tmp_path):
    root = mp_workspace
    runs = tmp_path / "runs"
    runs.mkdir()
    config = write_run_config(tmp_path, "runs/hidden", workspace=root, training={"max_steps": 2})
    port = free_port()
    args = [f"config={config}", "gpus=cpu", "nproc=1", "nnodes=2", "master_addr=127.0.0.1", f"master_port={port}"]
    started = time.monotonic()
    node0 = launch([*args, "node_rank=0"], cwd=tmp_path)
    # Node 1 sees its own empty directory where node 0 sees the run directory: no shared file system.
    node1 = launch([*args, "node_rank=1"], cwd=tmp_path, hide=runs)
    out0 = node0.communicate(timeout=300)[0]
    out1 = node1.communicate(timeout=300)[0]
    assert node0.returncode != 0 and node1.returncode != 0
    assert time.monotonic() - started < 240
    message = "rank 1/2 on"
    assert message in out0 and "cannot see the run directory rank 0 prepared" in out0, out0[-3000:] + out1[-3000:]
    assert "shares (NFS" in out0
    assert not list((runs / "hidden").glob("checkpoint-*"))


def test_a_record_that_fails_on_one_rank_ends_the_job_naming_it(mp_workspace, tmp_path):
    """An image whose header is valid but whose data is cut off fails at encoding, on one rank."""
    root = mp_workspace
    data = tmp_path / "data"
    subprocess.run(["cp", "-r", str(root / "data"), str(data)], check=True)
    bad_line = 3
    record = json.loads((data / "train.jsonl").read_text().splitlines()[bad_line - 1])
    image = data / record["images"][0]
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 3])
    config = write_run_config(tmp_path, "broken", workspace=root, train_jsonl=data / "train.jsonl",
                              custom={"health_check_samples": 0}, training={"max_steps": 6, "save_strategy": "no"})
    started = time.monotonic()
    proc = train_sh([f"config={config}", "gpus=cpu", "nproc=2", f"master_port={free_port()}"], cwd=tmp_path)
    assert proc.returncode != 0
    assert time.monotonic() - started < 180  # ended by the failure, not by a collective's timeout
    # custom.bad_records (error, the default) decides: the record is named by file:line and the job stops.
    named = f"{data / 'train.jsonl'}:{bad_line}: images[0]: cannot be decoded during training"
    assert named in proc.stdout, proc.stdout[-4000:]
    log = next((tmp_path / "broken" / "logs").glob("train-*-rank0.log")).read_text()
    assert named in log and "image file is truncated" in log


def test_an_invalid_record_stops_every_rank_before_anything_starts(mp_workspace, tmp_path):
    root = mp_workspace
    data = tmp_path / "data"
    subprocess.run(["cp", "-r", str(root / "data"), str(data)], check=True)
    lines = (data / "train.jsonl").read_text().splitlines()
    record = json.loads(lines[1])
    record["objects"][0]["desc"] = ""
    lines[1] = json.dumps(record)
    (data / "train.jsonl").write_text("\n".join(lines) + "\n")
    config = write_run_config(tmp_path, "invalid", workspace=root, train_jsonl=data / "train.jsonl")
    proc = train_sh([f"config={config}", "gpus=cpu", "nproc=2", f"master_port={free_port()}"], cwd=tmp_path)
    assert proc.returncode != 0
    assert proc.stdout.count("invalid record(s) in") == 1, proc.stdout[-3000:]
    # Rank 0 validates (once, for the job); the others never start on data it refused.
    assert "error on rank 0/2 on " in proc.stdout and f"{data / 'train.jsonl'}:2" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "invalid").iterdir()) == ["logs"]  # nothing written


def test_killed_two_process_run_resumes_to_the_same_losses(mp_workspace, tmp_path):
    root = mp_workspace
    training = {"max_steps": 8, "save_strategy": "steps", "save_steps": 2, "logging_steps": 1,
                "learning_rate": 1.0e-3, "train_dataloader_shuffle": True}
    straight = write_run_config(tmp_path, "straight", workspace=root, training=training)
    proc = train_sh([f"config={straight}", "gpus=cpu", "nproc=2", f"master_port={free_port()}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]

    killed = write_run_config(tmp_path, "killed", workspace=root, training=training)
    job = launch([f"config={killed}", "gpus=cpu", "nproc=2", f"master_port={free_port()}"], cwd=tmp_path)
    marker = tmp_path / "killed" / "checkpoint-4" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not marker.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.poll() is None, "the job ended before it could be killed"
    os.killpg(job.pid, signal.SIGKILL)  # the launcher's whole process group: bash, tee, torchrun, ranks
    job.wait()
    time.sleep(1)
    assert not (tmp_path / "killed" / "checkpoint-8").exists()

    resumed = write_run_config(tmp_path, "killed", workspace=root, training=training,
                               tuner={"resume_from_checkpoint": "auto"}, name_suffix="-resume")
    proc = train_sh([f"config={resumed}", "gpus=cpu", "nproc=2", f"master_port={free_port()}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    state = json.loads((tmp_path / "killed" / "checkpoint-8" / "trainer_state.json").read_text())
    assert state["global_step"] == 8
    expected, got = losses_by_step(tmp_path / "straight"), losses_by_step(tmp_path / "killed")
    assert [round(got[s], 4) for s in range(5, 9)] == [round(expected[s], 4) for s in range(5, 9)]


def test_warm_start_from_a_stage1_adapter_merges_once_under_two_processes(mp_workspace, tmp_path):
    root = mp_workspace
    stage1 = write_run_config(tmp_path, "stage1", recipe="stage_1_aligner_lora.yaml", workspace=root,
                              training={"max_steps": 2})
    proc = train_sh([f"config={stage1}", "gpus=cpu"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    adapter = tmp_path / "stage1" / "checkpoint-2"
    stage2 = write_run_config(tmp_path, "stage2", workspace=root, training={"max_steps": 2},
                              run={"init_from": str(adapter)})
    proc = train_sh([f"config={stage2}", "gpus=cpu", "nproc=2", f"master_port={free_port()}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert proc.stdout.count("warm start: the adapter") == 1
    assert proc.stdout.count("Successfully merged LoRA and saved in") == 1  # one merge for the whole job
    merged = tmp_path / "stage2" / "init_merged"
    base, warm = load_file(str(root / "model" / "model.safetensors")), load_file(str(merged / "model.safetensors"))
    changed = {k for k in base if not torch.equal(base[k], warm[k])}
    assert changed and all(".visual.merger." in k or ".visual.deepstack_merger_list." in k for k in changed)
    args = json.loads((tmp_path / "stage2" / "checkpoint-2" / "args.json").read_text())
    assert args["model"] == str(merged)  # every rank trained on the merged weights
