"""Training: ms-swift's SwiftSft fed with the project's data, and everything a job does around it.

`resolve.py` (a run resolved once: every rule, ms-swift's arguments), `setup.py` (the set-up once per
job), `distributed.py` (the processes of a job), `pipeline.py` (the `SwiftSft` subclass), `run_dir.py`,
`warm_start.py`, `checkpoint_guard.py`, `curves.py`. Imports the layers below it only.
"""
