"""Descriptions are compared as Unicode text: canonically equivalent spellings (NFC and NFD) are one label.

Qwen's tokenizer normalises every text it encodes to NFC (transformers' Qwen2 tokenizer sets an NFC normaliser),
so a model trained on a record whose desc is in NFD ("cafe" + a combining acute accent, as macOS file systems and
some OCR exports write it) answers in NFC; the label-aware metrics and the rewards must not call that a wrong
label. Case and spacing are left alone: "EXIT" and "exit" are different text."""

from __future__ import annotations

import json
import unicodedata

import pytest

from src.datasets.contract import GroundingObject, Record, SourceRef
from src.evaluation.metrics import evaluate
from src.rewards.grounding import REWARDS, truth_from_answer

NFD = unicodedata.normalize("NFD", "café")
NFC = unicodedata.normalize("NFC", "café")
BOX = (10.0, 10.0, 50.0, 50.0)


def _record(desc: str) -> Record:
    return Record(image="/d/a.png", width=100, height=100, source=SourceRef(file="/d/gt.jsonl", line=1),
                  objects=(GroundingObject(kind="bbox_2d", points=BOX, desc=desc),))


def _row(desc: str) -> dict:
    return {"source": "/d/gt.jsonl:1", "image": "/d/a.png", "parse_error": None,
            "objects": [{"kind": "bbox_2d", "points": list(BOX), "desc": desc, "score": 0.9}]}


@pytest.mark.parametrize(("gt_desc", "pred_desc"), [(NFD, NFC), (NFC, NFD)])
def test_an_nfc_prediction_of_an_nfd_desc_is_the_same_label(gt_desc, pred_desc):
    assert gt_desc != pred_desc
    metrics = evaluate([_row(pred_desc)], [_record(gt_desc)])
    assert metrics["pred_descs_not_in_gt"] == {}
    assert list(metrics["per_desc"]) == [NFC]
    assert metrics["per_desc"][NFC]["AP50"] == pytest.approx(1.0) and metrics["per_desc"][NFC]["tp"] == 1
    assert metrics["mean_over_descs"]["AP"] == pytest.approx(1.0) and metrics["mean_over_descs"]["f1"] == 1.0


def test_case_still_makes_another_label():
    metrics = evaluate([_row("EXIT")], [_record("exit")])
    assert metrics["pred_descs_not_in_gt"] == {"EXIT": 1} and metrics["mean_over_descs"]["tp"] == 0


def test_the_rewards_take_an_nfc_answer_for_an_nfd_truth():
    truth = truth_from_answer(json.dumps([{"bbox_2d": [100, 100, 500, 500], "label": NFD}], ensure_ascii=False))
    completion = json.dumps([{"bbox_2d": [100, 100, 500, 500], "label": NFC}], ensure_ascii=False)
    got = {name: fn(completion, truth) for name, fn in REWARDS.items()}
    assert got == dict(grounding_format=1.0, grounding_f1=1.0, grounding_iou=1.0, grounding_duplicates=0.0,
                       grounding_count=0.0, grounding_ap50=pytest.approx(1.0))
