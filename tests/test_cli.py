"""src/cli.py: the exit codes every command shares, the overwrite rule, and commands that follow them."""

from __future__ import annotations

import json

import pytest

from src.cli import EXIT_FAILED, EXIT_USAGE, UsageError, progress, refuse_existing, run_main
from src.config import ConfigError


@pytest.mark.parametrize(("error", "code"), [(UsageError("bad --out"), EXIT_USAGE),
                                             (ConfigError("run.yaml:3: `x` unknown"), EXIT_USAGE),
                                             (RuntimeError("a bug"), EXIT_FAILED)])
def test_user_errors_exit_2_with_the_message_and_failures_3_with_the_traceback(capsys, error, code):
    def main(argv):
        raise error

    assert run_main(main, []) == code
    err = capsys.readouterr().err
    if code == EXIT_USAGE:
        assert err == f"error: {error}\n"
    else:
        assert "Traceback (most recent call last)" in err and "RuntimeError: a bug" in err


def test_ctrl_c_exits_130_without_a_traceback(capsys):
    def main(argv):
        raise KeyboardInterrupt

    assert run_main(main, []) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_an_existing_output_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "metrics.json"
    refuse_existing(out, overwrite=False)  # nothing there yet
    out.write_text("{}")
    with pytest.raises(UsageError, match="metrics.json: the file exists; .* --overwrite"):
        refuse_existing(out, overwrite=False)
    refuse_existing(out, overwrite=True)
    folder = tmp_path / "vis"
    folder.mkdir()
    refuse_existing(folder, overwrite=False)  # an empty folder is fine
    (folder / "a.png").write_bytes(b"")
    with pytest.raises(UsageError, match="the folder is not empty"):
        refuse_existing(folder, overwrite=False)


def test_progress_is_silent_when_stderr_is_not_a_terminal(capsys):
    assert list(progress(range(3), total=3, desc="x")) == [0, 1, 2]
    assert capsys.readouterr().err == ""  # pytest's captured stderr is not a terminal


def test_eval_keeps_earlier_metrics_and_accepts_the_old_flag_spelling(tmp_path):
    from src.eval import main

    gt = tmp_path / "gt.jsonl"
    gt.write_text(json.dumps({"images": ["a.png"], "objects": [{"bbox_2d": [1, 1, 5, 5], "desc": "x"}],
                              "width": 10, "height": 10}) + "\n")
    pred = tmp_path / "pred.jsonl"
    pred.write_text(json.dumps({"image": str(tmp_path / "a.png"), "objects": [], "parse_error": None}) + "\n")
    out = tmp_path / "m.json"
    assert main(["--pred", str(pred), "--gt", str(gt), "--out", str(out), "--iou-type", "polygon"]) == 0
    first = out.read_text()
    assert json.loads(first)["iou_type"] == "polygon"
    assert main(["--pred", str(pred), "--gt", str(gt), "--out", str(out)]) == EXIT_USAGE
    assert out.read_text() == first
    assert main(["--pred", str(pred), "--gt", str(gt), "--out", str(out), "--overwrite"]) == 0


def test_infer_refuses_missing_records_and_an_adapter_without_args_before_loading(tree, data_dir, tmp_path, capsys):
    from src.infer import main

    t = tree({"custom": {"val_jsonl": None}})
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    out = tmp_path / "pred.jsonl"
    assert main(["--config", str(t.config), "--checkpoint", str(adapter), "--out", str(out)]) == EXIT_USAGE
    assert "no records to read: pass --jsonl or set `custom.val_jsonl`" in capsys.readouterr().err
    records = data_dir / "train.jsonl"
    assert main(["--config", str(t.config), "--checkpoint", str(adapter), "--jsonl", str(records),
                 "--out", str(out)]) == EXIT_USAGE
    assert "an adapter without args.json" in capsys.readouterr().err
    assert not out.exists()


def _parsers():
    import argparse

    from src import eval as eval_entry
    from src import infer, sft, vis
    from src.config.__main__ import build_parser as config_parser
    from src.datasets.__main__ import build_parser as datasets_parser
    from src.tiny_model.model import build_parser as tiny_parser

    stack = [(name, build()) for name, build in (("sft", sft.build_parser), ("infer", infer.build_parser),
                                                 ("eval", eval_entry.build_parser), ("vis", vis.build_parser),
                                                 ("datasets", datasets_parser), ("tiny_model", tiny_parser),
                                                 ("config", config_parser))]
    while stack:
        name, parser = stack.pop()
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack += [(f"{name} {sub}", p) for sub, p in action.choices.items()]


def test_every_flag_has_help_a_snake_case_name_and_config_comes_with_base_config():
    for name, parser in _parsers():
        flags = {opt: action for action in parser._actions for opt in action.option_strings}
        for opt, action in flags.items():
            if opt in ("-h", "--help"):
                continue
            assert action.help, f"{name}: {opt} has no help"
            assert action.option_strings[0].replace("_", "").isascii() and "-" not in action.option_strings[0][2:], \
                f"{name}: {action.option_strings[0]} is not --snake_case"
        if "--config" in flags:
            assert "--base_config" in flags, f"{name} takes --config but not --base_config"


def test_an_output_equal_to_an_input_is_refused_even_with_overwrite(tmp_path):
    """Issue 21: `src.eval --out` equal to `--gt` with `--overwrite` replaced the ground truth with metrics."""
    from src.eval import main, run

    gt = tmp_path / "gt.jsonl"
    gt.write_text(json.dumps({"images": ["a.png"], "objects": [{"bbox_2d": [1, 1, 5, 5], "desc": "x"}],
                              "width": 10, "height": 10}) + "\n")
    pred = tmp_path / "pred.jsonl"
    pred.write_text(json.dumps({"image": str(tmp_path / "a.png"), "objects": [], "parse_error": None}) + "\n")
    before = gt.read_bytes(), pred.read_bytes()
    (tmp_path / "link.jsonl").symlink_to(gt)
    for out, flag in ((gt, "--gt"), (pred, "--pred"), (tmp_path / "link.jsonl", "--gt")):
        with pytest.raises(UsageError) as refused:
            run(["--pred", str(pred), "--gt", str(gt), "--out", str(out), "--overwrite"])
        assert f"metrics {out} is also the input {flag}" in str(refused.value)
        assert "choose another path for the output" in str(refused.value)
    assert main(["--pred", str(pred), "--gt", str(gt), "--out", str(gt), "--overwrite"]) == EXIT_USAGE
    assert (gt.read_bytes(), pred.read_bytes()) == before  # nothing replaced


def test_every_writing_command_refuses_its_own_input_as_output(tree, data_dir, tmp_path, capsys):
    from src.datasets.__main__ import main as datasets
    from src.infer import main as infer
    from src.vis import main as vis

    t = tree()
    train = t.train_jsonl
    before = train.read_bytes()
    runs = [
        (vis, ["--gt", str(train), "--out", str(train), "--overwrite"], "--gt"),
        (datasets, ["render", "--config", str(t.config), "--out", str(train), "--overwrite"], "custom.train_jsonl"),
        (datasets, ["rows", "--config", str(t.config), "--out", str(t.config), "--overwrite"], "--config"),
        (datasets, ["cache", "--config", str(t.config), "--out", str(train), "--overwrite"], "custom.train_jsonl"),
        (datasets, ["convert", "coco", "--ann", str(train), "--images", str(data_dir), "--out", str(train),
                    "--overwrite"], "--ann"),
        (infer, ["--config", str(t.config), "--checkpoint", str(tmp_path), "--jsonl", str(train), "--out",
                 str(train), "--overwrite"], "--jsonl"),
        (infer, ["--config", str(t.config), "--checkpoint", str(tmp_path), "--jsonl", str(data_dir / "val.jsonl"),
                 "--out", str(train), "--coco_gt", str(train), "--coco_results", str(tmp_path / "r.json"),
                 "--overwrite"], "--coco_gt"),
    ]
    for main, argv, flag in runs:
        assert main(argv) == EXIT_USAGE, argv
        assert f"is also the input {flag}" in capsys.readouterr().err, argv
    assert train.read_bytes() == before


def test_infer_names_a_truncated_adapter_file_before_loading(tree, data_dir, tmp_path, capsys):
    """Issue 21: a truncated adapter file gave a traceback without its path."""
    import numpy as np
    from safetensors.numpy import save_file

    from src.infer import main

    t = tree()
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "args.json").write_text(json.dumps({"model": str(tmp_path)}))
    weights = adapter / "adapter_model.safetensors"
    save_file({"a.lora_A.weight": np.ones((8, 8), dtype=np.float32)}, str(weights))
    weights.write_bytes(weights.read_bytes()[:-40])
    out = tmp_path / "pred.jsonl"
    assert main(["--config", str(t.config), "--checkpoint", str(adapter), "--jsonl", str(data_dir / "train.jsonl"),
                 "--out", str(out)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{weights} " in err and "cut short while written" in err and "an earlier checkpoint-N" in err
    assert "Traceback" not in err and not out.exists()


def test_infer_refuses_a_limit_below_one(capsys):
    """`--limit -1` cut the last record off silently (a Python slice), `--limit 0` wrote nothing."""
    from src.infer import build_parser

    argv = ["--checkpoint", "c", "--out", "o", "--config", "x.yaml", "--limit"]
    for limit in ("0", "-1"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*argv, limit])
        assert f"--limit: must be >= 1, got {limit}" in capsys.readouterr().err
    assert build_parser().parse_args([*argv, "2"]).limit == 2


def test_infer_refuses_any_input_as_an_output_before_loading(tree, data_dir, tmp_path, capsys):
    """`--coco_results` was checked against --coco_gt, --out and the records only: `--coco_results run.yaml
    --overwrite` replaced the config after the whole generation; `--out` was not checked against the config's
    `extends` files or the checkpoint's files. Every input is checked before anything loads (the checkpoint here
    holds no model: a refusal after the checks would name it instead)."""
    from src.infer import main

    t = tree()
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "args.json").write_text("{}")
    base = tmp_path / "under.yaml"
    base.write_text("custom: {}\n")
    before = {p: p.read_bytes() for p in (t.config, t.base, base, checkpoint / "args.json")}
    argv = ["--config", str(t.config), "--base_config", str(base), "--checkpoint", str(checkpoint),
            "--jsonl", str(data_dir / "val.jsonl"), "--overwrite"]
    other = ["--out", str(tmp_path / "pred.jsonl"), "--coco_results"]
    for flags, what, name in (
        ([*other, str(t.config)], f"COCO results {t.config}", "--config"),
        ([*other, str(base)], f"COCO results {base}", "--base_config"),
        ([*other, str(t.base)], f"COCO results {t.base}", f"--config extends ({t.base})"),
        ([*other, str(checkpoint / "args.json")], f"COCO results {checkpoint / 'args.json'}", "--checkpoint"),
        ([*other, str(tmp_path / "pred.jsonl")], f"COCO results {tmp_path / 'pred.jsonl'}", "--out"),
        (["--out", str(t.base)], f"predictions {t.base}", f"--config extends ({t.base})"),
        (["--out", str(checkpoint / "args.json")], f"predictions {checkpoint / 'args.json'}", "--checkpoint"),
    ):
        assert main([*argv, *flags]) == EXIT_USAGE, flags
        err = capsys.readouterr().err
        assert f"{what} is also the input {name}" in err, (flags, err)
    assert {p: p.read_bytes() for p in before} == before
    assert not (tmp_path / "pred.jsonl").exists()



def test_a_folder_is_refused_as_a_file_output_before_anything_runs(tree, data_dir, tmp_path, capsys):
    """refuse_existing let an existing folder through as a file output (empty, or any with --overwrite): src.infer
    failed with IsADirectoryError only after the whole generation."""
    from src.eval import main as evaluate
    from src.infer import main as infer

    folder = tmp_path / "outputs"
    folder.mkdir()
    for overwrite in (False, True):
        with pytest.raises(UsageError, match=f"predictions {folder} is a folder"):
            refuse_existing(folder, overwrite, "predictions", output="file")
    refuse_existing(folder, True, "pictures", output="folder")  # a folder output may be one
    (tmp_path / "taken").write_text("x")
    with pytest.raises(UsageError, match="pictures .*taken is a file"):
        refuse_existing(tmp_path / "taken", True, "pictures", output="folder")
    with pytest.raises(UsageError, match="metrics .*taken/sub/m.json: .*taken is a file"):
        refuse_existing(tmp_path / "taken" / "sub" / "m.json", True, "metrics", output="file")
    t = tree()
    inputs = ["--config", str(t.config), "--checkpoint", str(tmp_path / "no_checkpoint"), "--jsonl",
              str(data_dir / "val.jsonl")]
    for outputs in (["--out", str(folder)], ["--out", str(folder), "--overwrite"],
                    ["--out", str(tmp_path / "p.jsonl"), "--coco_results", str(folder), "--overwrite"]):
        assert infer([*inputs, *outputs]) == EXIT_USAGE, outputs
        assert f"{folder} is a folder" in capsys.readouterr().err, outputs
    gt = tmp_path / "gt.jsonl"
    gt.write_text(json.dumps({"images": ["a.png"], "objects": [], "width": 10, "height": 10}) + "\n")
    assert evaluate(["--pred", str(gt), "--gt", str(gt), "--out", str(folder), "--overwrite"]) == EXIT_USAGE
    assert f"metrics {folder} is a folder" in capsys.readouterr().err
    assert list(folder.iterdir()) == []
