"""What every command line of the project shares: exit codes, errors, the overwrite rule, progress bars.

Exit codes (README "Exit codes"):
- 0: done;
- 1: a check ran and found problems (`python -m src.datasets validate` with invalid records);
- 2: bad usage, config or data: nothing was started (the message names the file, key or line);
- 3: a failure while running, with its traceback (a programming error, a crash of a library);
- 130: interrupted (Ctrl-C);
- 143: stopped by SIGTERM (`src.sft` says where the run stopped; the other commands end by the signal itself,
  which a shell reports as 143 too).
argparse's own usage errors exit 2 too. Under torchrun the launcher's code (1) stands for any rank's.

Every output file or folder is refused when it exists (a non-empty folder) unless `--overwrite`, and always
when it is one of the command's inputs (`refuse_existing(..., inputs=...)`).
Flags are spelled ms-swift's way (`--snake_case`); older spellings stay accepted as aliases.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal, TypeVar

from src.config.errors import EXIT_CONFIG_ERROR, EXIT_FAILED, EXIT_INTERRUPTED, UsageError, UserError

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = EXIT_CONFIG_ERROR

T = TypeVar("T")


def user_errors() -> tuple[type[Exception], ...]:
    """The exception types that mean "fix your input" (exit 2, message only): every `UserError` (src/config/errors.py),
    the config's, the data layer's and the command lines' alike."""
    return (UserError,)


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a command's `main`: its return code, 2 with `error: MESSAGE` for a user error, 3 with the
    traceback for anything else."""
    try:
        return main(argv)
    except user_errors() as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # noqa: BLE001 - the traceback is the message
        traceback.print_exc()
        return EXIT_FAILED


def make_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """An ArgumentParser whose description is the first line of the command's docstring."""
    return argparse.ArgumentParser(prog=prog, description=(doc or "").strip().splitlines()[0] if doc else None,
                                   allow_abbrev=False)


def add_config_args(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """`--config` and `--base_config`, as every command that reads a config takes them."""
    parser.add_argument("--config", required=required, type=Path, help="the run's YAML (its extends chain merged)")
    parser.add_argument("--base_config", type=Path, help="a YAML merged under the config's whole extends chain")


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (anything else is a usage error naming the flag and the value)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_overwrite_arg(parser: argparse.ArgumentParser) -> None:
    """`--overwrite`: replace an existing output."""
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file or folder")


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return a.samefile(b)  # symlinks and hard links too
        return a.resolve() == b.resolve()
    except OSError:
        return False


def refuse_existing(path: Path, overwrite: bool, what: str = "output",
                    inputs: Mapping[str, Path | str | None] | None = None, *,
                    output: Literal["file", "folder"] | None = None) -> None:
    """Raise UsageError when `path` is one of `inputs` ({flag or key: path} the command reads; an output never
    replaces an input, whatever `--overwrite` says), or an existing file or non-empty folder while `overwrite`
    is off. `output` says what the command writes there: a folder where a file goes (or a file where a folder
    goes) is refused whatever `overwrite` says, before the command runs, not when it comes to write."""
    for name, given in (inputs or {}).items():
        if given is not None and str(given) and _same_file(Path(path), Path(given)):
            raise UsageError(f"{what} {path} is also the input {name}: writing it would replace what this command "
                             f"reads (with --overwrite too); choose another path for the output")
    if output == "file" and path.is_dir():
        raise UsageError(f"{what} {path} is a folder, and a file goes there (--overwrite replaces a file, never a "
                         f"folder); give a file path, such as {path / 'NAME'}")
    if output == "folder" and path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path} is a file, and a folder goes there (--overwrite replaces a folder's "
                         f"files, never a file); give a folder path")
    above = next((p for p in Path(path).absolute().parents if p.exists()), None) if output else None
    if above is not None and not above.is_dir():
        raise UsageError(f"{what} {path}: {above} is a file, so no folder can hold the output there; give a path in "
                         f"a folder")
    if overwrite or not path.exists():
        return
    if path.is_dir() and not any(path.iterdir()):
        return
    kind = "folder is not empty" if path.is_dir() else "file exists"
    raise UsageError(f"{what} {path}: the {kind}; choose another path or pass --overwrite to replace it")


def progress(items: Iterable[T], *, total: int | None = None, desc: str, unit: str = "it",
             weight: Callable[[T], int] | None = None) -> Iterable[T]:
    """`items` with a progress bar on stderr (rate included) when stderr is a terminal; plain otherwise.
    With `weight`, each item advances the bar by `weight(item)` units (a chunk by its lines)."""
    from tqdm import tqdm

    bar = tqdm(None if weight else items, total=total, desc=desc, unit=unit, disable=None, file=sys.stderr,
               dynamic_ncols=True)
    if weight is None:
        return bar
    return _weighted(items, bar, weight)


def _weighted(items: Iterable[T], bar, weight: Callable[[T], int]) -> Iterator[T]:  # noqa: ANN001 - a tqdm bar
    with bar:
        for item in items:
            yield item
            bar.update(weight(item))
