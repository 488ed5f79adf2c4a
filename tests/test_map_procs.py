"""ms-swift's encoding `datasets.map` runs in the calling process unless the user asked for workers."""

import os

from datasets import Dataset

from src.datasets.map_procs import in_process_num_proc


def _pids(num_proc):
    rows = Dataset.from_list([{"i": i} for i in range(4)])
    mapped = rows.map(lambda batch: {"pid": [os.getpid()] * len(batch["i"])}, batched=True, num_proc=num_proc,
                      load_from_cache_file=False)
    return set(mapped["pid"])


def test_the_default_of_one_worker_encodes_in_this_process_and_a_users_count_is_kept():
    assert _pids(1) != {os.getpid()}  # why: datasets forks a pool even for one worker
    assert in_process_num_proc(1) == 0
    assert _pids(in_process_num_proc(1)) == {os.getpid()}
    assert in_process_num_proc(4) == 4 and in_process_num_proc(None) is None
