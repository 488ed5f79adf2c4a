"""parse_answer: both answer formats, truncation, junk, bad entries."""

from __future__ import annotations

import pytest

from src.datasets.answer import detect_format, parse_answer

BOX = '{"bbox_2d": [10, 20, 30, 40], "label": "red circle"}'
QUAD = '{"quad": [1, 2, 9, 2, 9, 8, 1, 8], "label": "text: AB"}'
B1 = ("bbox_2d", [10.0, 20.0, 30.0, 40.0], "red circle")
Q1 = ("quad", [1.0, 2.0, 9.0, 2.0, 9.0, 8.0, 1.0, 8.0], "text: AB")
LEGACY_BOX = "<|object_ref_start|>red circle<|object_ref_end|><|box_start|>(10,20),(30,40)<|box_end|>"
LEGACY_QUAD = "<|object_ref_start|>text: AB<|object_ref_end|><|quad_start|>(1,2),(9,2),(9,8),(1,8)<|quad_end|>"

# (id, text, format, objects as (kind, coords, label), error substring or None, truncated, bad_entries)
CASES = [
    ("fenced-json", f"```json\n[{BOX}, {QUAD}]\n```", "json", [B1, Q1], None, False, 0),
    ("bare-json", f"[{BOX}]", "json", [B1], None, False, 0),
    ("json-with-prose", f"Here you go:\n```json\n[{BOX}]\n```\nDone.", "json", [B1], None, False, 0),
    ("empty-list", "[]", "json", [], None, False, 0),
    ("truncated-mid-entry", f'```json\n[{BOX}, {QUAD}, {{"bbox_2d": [1, 2', "json", [B1, Q1], "cut off", True, 0),
    ("truncated-after-comma", f"[{BOX},", "json", [B1], "cut off", True, 0),
    ("wrong-length-json", f'[{BOX}, {{"bbox_2d": [1, 2, 3], "label": "x"}}]', "json", [B1], "1 entry", False, 1),
    ("both-geometries", '[{"bbox_2d": [1, 2, 3, 4], "quad": [1, 2, 3, 4, 5, 6, 7, 8]}]', "json", [],
     "1 entry", False, 1),
    ("non-dict-entries", f'[{BOX}, 5, "x"]', "json", [B1], "2 entries", False, 2),
    ("junk", "I cannot see any objects in this image.", "unknown", [], "no JSON list", False, 0),
    ("empty", "", "unknown", [], "no JSON list", False, 0),
    ("legacy-box", LEGACY_BOX, "legacy", [B1], None, False, 0),
    ("legacy-quad", LEGACY_QUAD, "legacy", [Q1], None, False, 0),
    ("legacy-mixed", f"{LEGACY_BOX}\n{LEGACY_QUAD}", "legacy", [B1, Q1], None, False, 0),
    ("legacy-shared-ref",
     "<|object_ref_start|>dog<|object_ref_end|><|box_start|>(1,2),(3,4)<|box_end|><|box_start|>(5,6),(7,8)<|box_end|>",
     "legacy", [("bbox_2d", [1.0, 2.0, 3.0, 4.0], "dog"), ("bbox_2d", [5.0, 6.0, 7.0, 8.0], "dog")], None, False, 0),
    ("legacy-no-ref", "<|box_start|>(1, 2), (3, 4)<|box_end|>", "legacy", [("bbox_2d", [1.0, 2.0, 3.0, 4.0], "")],
     None, False, 0),
    ("legacy-v1-tags", "<ref>red circle</ref><box>(10,20),(30,40)</box>", "legacy", [B1], None, False, 0),
    ("legacy-truncated", f"{LEGACY_BOX}<|object_ref_start|>x<|object_ref_end|><|box_start|>(1,2),(3", "legacy",
     [B1], "cut off", True, 0),
    ("legacy-wrong-length", f"{LEGACY_BOX}<|box_start|>(1,2)<|box_end|><|quad_start|>(1,2),(3,4)<|quad_end|>",
     "legacy", [B1], "2 entries", False, 2),
    ("legacy-junk-inside-span", "<|box_start|>(1,2),(3,4) oops<|box_end|>", "legacy", [], "1 entry", False, 1),
    # Swapped corners are malformed however the box is written (as in the JSON form): dropped and counted.
    ("legacy-swapped-corners", f"{LEGACY_BOX}<|box_start|>(30,40),(10,20)<|box_end|>", "legacy", [B1], "1 entry",
     False, 1),
]


@pytest.mark.parametrize(("text", "fmt", "objects", "error", "truncated", "bad"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_parse_answer(text, fmt, objects, error, truncated, bad):
    parsed = parse_answer(text)
    assert parsed.format == fmt
    assert [(o["kind"], o["coords"], o["label"]) for o in parsed.objects] == objects
    if error is None:
        assert parsed.error is None
    else:
        assert parsed.error is not None and error in parsed.error
    assert parsed.truncated is truncated
    assert parsed.bad_entries == bad


def test_image_key_is_kept():
    parsed = parse_answer('[{"bbox_2d": [1, 2, 3, 4], "label": "a", "image": 1}, {"bbox_2d": [1, 2, 3, 4]}]')
    assert parsed.objects[0]["image"] == 1
    assert "image" not in parsed.objects[1]
    assert parsed.objects[1]["label"] == ""


def test_junk_chars_counted_not_an_error():
    parsed = parse_answer(f"Sure! [{BOX}] hope it helps")
    assert parsed.error is None and parsed.junk_chars == len("Sure!hopeithelps")
    legacy = parse_answer(f"The circle is here: {LEGACY_BOX}.")
    assert legacy.error is None and legacy.junk_chars == len("Thecircleishere:.")


def test_detect_format():
    assert detect_format(f"[{BOX}]") == "json"
    assert detect_format(LEGACY_BOX) == "legacy"
    assert detect_format("nothing") == "unknown"


def test_a_leading_reasoning_block_is_not_part_of_the_answer():
    """Qwen3.5's template puts `<think>...</think>` before every answer; coordinates inside it are not objects."""
    answer = '[{"bbox_2d": [1, 2, 3, 4], "label": "a"}]'
    thought = parse_answer('<think>\nthe box [9, 9, 9, 9] is wrong\n</think>\n\n' + answer)
    assert thought.objects == parse_answer(answer).objects and thought.junk_chars == 0 and thought.error is None
    unclosed = parse_answer('<think>\n[{"bbox_2d": [1, 2, 3, 4], "label": "a"}]')  # no end: nothing is dropped
    assert unclosed.junk_chars > 0 and len(unclosed.objects) == 1
