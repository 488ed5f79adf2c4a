"""`python -m src.config get --config CFG [--base_config BASE] KEY`: print one resolved value.

Used by scripts/train.sh to find the run directory; handy to check what a chain resolves to.
Exit code 2 with the config's error message when the config is invalid or the key is unknown.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import EXIT_CONFIG_ERROR, ConfigError, load_project_config


def build_parser() -> argparse.ArgumentParser:
    """The `python -m src.config` parser (every flag with its help)."""
    parser = argparse.ArgumentParser(prog="python -m src.config", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    get = sub.add_parser("get", help="print one resolved value (dotted key, e.g. training.output_dir)")
    get.add_argument("--config", required=True, type=Path, help="the run's YAML (its extends chain merged)")
    get.add_argument("--base_config", type=Path, help="a YAML merged under the config's whole extends chain")
    get.add_argument("--device", choices=["cpu", "auto"], default="auto",
                     help="cpu: with configs/cpu.yaml's keys on top, as `python -m src.sft --device cpu` runs it")
    get.add_argument("key", help="a dotted key, e.g. training.output_dir")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Print the value; 0 done, 2 for an invalid config or a key it does not set."""
    args = build_parser().parse_args(argv)
    try:
        cfg = load_project_config(args.config, args.base_config, check_paths=False, on_cpu=args.device == "cpu")
        value = cfg.merged.values
        for part in args.key.split("."):
            if not isinstance(value, dict) or part not in value:
                raise ConfigError(f"`{args.key}` is not set in {args.config}")
            value = value[part]
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    print(value if isinstance(value, str) else json.dumps(value))
    return 0


if __name__ == "__main__":
    from src.cli import run_main  # the entry's exit codes; the config layer itself imports nothing above it

    sys.exit(run_main(main))
