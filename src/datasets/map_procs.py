"""The worker count handed to ms-swift's `datasets.map` encoding, from a process that already runs torch.

datasets >= 4.1 starts a forked worker pool for any `num_proc >= 1`, ms-swift's default of 1 included; only 0
(or None) encodes in the calling process. A fork taken after torch has started its OpenMP threads can leave the
worker waiting for ever on a lock no thread of it holds: the suite's cache build hung that way after an
in-process training (py-spy: the worker stuck in torchvision's normalize). ms-swift's own dataset loading
divides by `num_proc` (`load_dataset(num_proc=0)` raises ZeroDivisionError), so 0 is given only to the encoding
call, never written into a run's arguments.
"""

from __future__ import annotations


def in_process_num_proc(num_proc: int | None) -> int | None:
    """0 (encode in this process) for ms-swift's default of 1; any other value as the user set it (they asked
    for that many workers and own the fork)."""
    return 0 if num_proc == 1 else num_proc
