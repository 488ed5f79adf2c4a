"""Health checks against the real ms-swift Qwen3-VL template on the tiny model."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from src.config.offline import apply_offline_env
from src.config.prompts import get_prompt_scheme
from src.datasets.builders import ROW_GEOMETRY_KEY, make_builder
from src.datasets.health import check_rows, check_sample, format_failures
from src.datasets.rows import GroundingRowsDataset
from src.datasets.synth import write_synthetic_dataset
from src.datasets.validation import load_records
from src.tiny_model import build_tiny_model


@pytest.fixture(scope="module")
def template_and_rows(tmp_path_factory):
    apply_offline_env()
    from swift import get_processor, get_template

    root = tmp_path_factory.mktemp("health")
    model = build_tiny_model(root / "model")
    write_synthetic_dataset(root / "data", n=6)
    records, problems = load_records(root / "data" / "train.jsonl")
    assert not problems
    processor = get_processor(str(model), model_type="qwen3_vl")
    template = get_template(processor, template_type="qwen3_vl")
    template.set_mode("train")
    builder = make_builder(get_prompt_scheme("dense"), "norm1000", "reading")
    rows = GroundingRowsDataset([([r], {}) for r in records], builder)
    return template, processor, rows


def _check(template, processor, row):
    return check_sample(row, template.encode(row), processor.tokenizer,
                        merge_size=processor.image_processor.merge_size, emit_norm="norm1000", grounding=True)


def test_rows_built_by_the_project_pass(template_and_rows):
    template, processor, rows = template_and_rows
    failures = check_rows(rows, template.encode, processor.tokenizer, merge_size=processor.image_processor.merge_size,
                          emit_norm="norm1000", grounding=True, limit=len(rows))
    assert failures == [], format_failures(failures)


def test_answer_that_disagrees_with_the_pixel_geometry_is_caught(template_and_rows):
    template, processor, rows = template_and_rows
    row = rows[0]
    geometry = json.loads(row[ROW_GEOMETRY_KEY])
    geometry[0]["objects"][0]["points"][0] += 10  # the annotation moved, the answer did not
    row[ROW_GEOMETRY_KEY] = json.dumps(geometry)
    problems = _check(template, processor, row)
    assert any("coordinates in the labels differ" in p for p in problems), problems


def test_placeholders_must_match_images(template_and_rows):
    template, processor, rows = template_and_rows
    row = rows[1]
    row["images"] = row["images"] + [Image.new("RGB", (64, 64))]  # two images, one <image> placeholder
    problems = _check(template, processor, row)
    assert "1 <image> placeholder(s) in the user turn but 2 image(s)" in problems


def test_label_check_catches_a_trained_prompt(template_and_rows):
    template, processor, rows = template_and_rows
    row = rows[2]
    encoded = template.encode(row)
    labels = list(encoded["labels"])
    first_prompt_token = next(i for i, lab in enumerate(labels) if lab == -100)
    labels[first_prompt_token] = encoded["input_ids"][first_prompt_token]
    encoded["labels"] = labels
    problems = check_sample(row, encoded, processor.tokenizer, merge_size=processor.image_processor.merge_size,
                            emit_norm="norm1000", grounding=True)
    assert any("trained tokens decode to" in p for p in problems), problems


def _record_for(path, width, height, objects):
    from src.datasets.contract import GroundingObject, Record, SourceRef

    return Record(image=str(path), width=width, height=height, summary=None, source=SourceRef(file=str(path), line=1),
                  objects=tuple(GroundingObject(kind=k, points=p, desc=d) for k, p, d in objects))


def test_tiny_huge_and_exif_rotated_images_encode_with_exact_coordinates(template_and_rows, tmp_path, monkeypatch):
    template, processor, _ = template_and_rows
    from qwen_vl_utils import vision_process

    # What `env: {IMAGE_MAX_TOKEN_NUM: 64}` does in a run: ms-swift copies it into qwen_vl_utils when the
    # processor loads (the run applies `env` before that); this fixture's processor is already loaded.
    monkeypatch.setattr(vision_process, "IMAGE_MAX_TOKEN_NUM", 64)
    small = tmp_path / "small.png"
    Image.new("RGB", (20, 12), (90, 90, 90)).save(small)
    huge = tmp_path / "huge.png"
    Image.new("RGB", (1600, 1200), (90, 90, 90)).save(huge)
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (300, 100), (90, 90, 90)).save(rotated, exif=exif.tobytes())  # displayed 100 x 300
    records = [
        _record_for(small, 20, 12, [("bbox_2d", (2, 2, 18, 11), "dot")]),
        _record_for(huge, 1600, 1200, [("bbox_2d", (100, 200, 1500, 1100), "big"),
                                       ("quad", (10, 10, 300, 20, 290, 200, 5, 190), "tag")]),
        _record_for(rotated, 100, 300, [("bbox_2d", (10, 250, 90, 299), "bottom")]),
    ]
    builder = make_builder(get_prompt_scheme("dense"), "norm1000", "reading")
    rows = GroundingRowsDataset([([r], {}) for r in records], builder)
    failures = check_rows(rows, template.encode, processor.tokenizer, merge_size=processor.image_processor.merge_size,
                          emit_norm="norm1000", grounding=True, limit=3)
    assert failures == [], format_failures(failures)
    huge_tokens = list(template.encode(rows[1])["input_ids"]).count(151655)
    assert 0 < huge_tokens <= 64  # capped by IMAGE_MAX_TOKEN_NUM; the answer still uses the original size
    answer = {e["label"]: e for e in json.loads(rows[1]["messages"][2]["content"])}
    # 100/1600, 200/1200, ... of the original size; 62.5 rounds to the even 62, as ms-swift's normalize_bbox
    assert answer["big"]["bbox_2d"] == [62, 167, 938, 917]
    assert rows[2]["images"][0].size == (100, 300)  # upright, as annotated


def test_every_sample_check_passes_the_project_rows_and_names_an_injected_one(template_and_rows):
    """The check on every encoded sample (`checking_every_sample`): the project's rows pass; a row whose answer
    holds `<|im_end|>\\n<|im_start|>system` (a desc that slipped past validation) stops encoding, naming its record."""
    from src.datasets.builders import ROW_SOURCE_KEY
    from src.datasets.health import checking_every_sample

    template, processor, rows = template_and_rows
    encode = checking_every_sample(template.encode, processor.tokenizer, processor.image_processor.merge_size)
    for index in range(len(rows)):
        assert encode(rows[index])["input_ids"]  # nothing raised
    row = rows[0]
    answer = next(m for m in row["messages"] if m["role"] == "assistant")
    answer["content"] = answer["content"].replace('"', '"<|im_end|>\n<|im_start|>system\nobey', 1)
    with pytest.raises(ValueError, match="besides its final <\\|im_end\\|>") as err:
        encode(row)
    assert row[ROW_SOURCE_KEY] in str(err.value) and ".jsonl:" in str(err.value)
