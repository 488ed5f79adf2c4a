"""`python -m src.tiny_model --out DIR [--seed N] [--size tiny|2b|4b] [--overwrite]`."""

import sys

from src.cli import run_main
from src.tiny_model.model import main

sys.exit(run_main(main))
