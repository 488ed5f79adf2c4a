"""A process's place in a torchrun job, the training backend, and the job-of-one collectives.
The collectives across processes run for real in tests/test_multiprocess.py."""

from __future__ import annotations

import pytest

from src.training.distributed import Failure, Job, JobFailed, job_from_env, training_backend


def test_torchrun_variables_give_the_place_in_the_job():
    job = job_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                        "GROUP_RANK": "1"})
    assert (job.rank, job.world_size, job.local_rank, job.node_rank, job.nnodes) == (3, 4, 1, 1, 2)
    assert job.distributed and not job.is_main
    assert job.describe().startswith("rank 3/4 on ") and job.describe().endswith("(node 1)")


def test_without_torchrun_a_process_is_a_job_of_one():
    job = job_from_env({})
    assert (job.rank, job.world_size, job.nnodes) == (0, 1, 1) and job.is_main and not job.distributed
    assert job.share({"a": 1}) == {"a": 1}
    job.agree(None)  # nothing to agree on
    job.connect(backend="gloo", timeout_s=10, deepspeed=True)  # no process group for one process
    job.close()


def test_a_failure_in_a_job_of_one_is_printed_and_ends_with_its_code(capsys):
    with pytest.raises(JobFailed) as failed:
        Job().agree(Failure(2, "`training.output_dir` = /x already holds a run"))
    assert failed.value.code == 2
    assert capsys.readouterr().err == "error: `training.output_dir` = /x already holds a run\n"


@pytest.mark.parametrize(("kwargs", "cuda", "backend"), [
    ({}, True, "nccl"),
    ({}, False, "gloo"),
    ({"use_cpu": True}, True, "gloo"),
    ({"ddp_backend": "hccl"}, False, "hccl"),
])
def test_training_backend_follows_the_device_and_the_config(kwargs, cuda, backend):
    assert training_backend(kwargs, cuda) == backend
