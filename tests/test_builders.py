"""Records -> ms-swift rows: the answer JSON, coordinates, order, grouping and prompts."""

from __future__ import annotations

import json

import pytest

from src.config import ConfigError
from src.config.prompts import PROMPT_SCHEMES, get_prompt_scheme
from src.datasets.answer import order_objects
from src.datasets.builders import ROW_GEOMETRY_KEY, ROW_SOURCE_KEY, GroundingBuilder, SummaryBuilder, make_builder
from src.datasets.contract import GroundingObject, Record, SourceRef
from src.datasets.preprocessors import GroupingPreprocessor, group_records


def _record(objects, width=200, height=100, line=1, summary=None):
    return Record(image=f"/data/img{line}.png", width=width, height=height, summary=summary,
                  objects=tuple(GroundingObject(kind=k, points=tuple(p), desc=d) for k, p, d in objects),
                  source=SourceRef(file="/data/train.jsonl", line=line))


DENSE = get_prompt_scheme("dense")


def test_box_answer_is_native_qwen3vl_json_in_norm1000():
    record = _record([("bbox_2d", (20, 10, 120, 60), "red circle")])
    answer = GroundingBuilder(DENSE, emit_norm="norm1000", object_order="reading").answer([record])
    assert answer == '[{"bbox_2d": [100, 100, 600, 600], "label": "red circle"}]'


@pytest.mark.parametrize(("norm", "expected"), [
    ("none", [21, 10, 120, 60]),
    ("norm100", [10, 10, 60, 60]),
    ("norm1000", [103, 100, 600, 600]),
])
def test_emit_norm_selects_the_coordinate_space(norm, expected):
    record = _record([("bbox_2d", (20.6, 10, 120, 60), "x")])
    answer = json.loads(GroundingBuilder(DENSE, emit_norm=norm, object_order="reading").answer([record]))
    assert answer[0]["bbox_2d"] == expected


def test_quad_answer_keeps_eight_coordinates():
    record = _record([("quad", (20, 10, 120, 10, 120, 60, 20, 60), "tag")])
    answer = json.loads(GroundingBuilder(DENSE, emit_norm="norm1000", object_order="reading").answer([record]))
    assert answer == [{"quad": [100, 100, 600, 100, 600, 600, 100, 600], "label": "tag"}]


def test_reading_order_is_top_then_left_and_given_order_is_kept():
    objects = [("bbox_2d", (100, 50, 150, 90), "low"), ("bbox_2d", (150, 5, 190, 20), "top right"),
               ("bbox_2d", (10, 5, 40, 20), "top left")]
    record = _record(objects)
    assert [o.desc for o in order_objects(record.objects, "reading")] == ["top left", "top right", "low"]
    assert [o.desc for o in order_objects(record.objects, "given")] == ["low", "top right", "top left"]
    with pytest.raises(ValueError, match="unknown object order"):
        order_objects(record.objects, "random")


def test_row_has_system_user_assistant_images_geometry_and_source():
    record = _record([("bbox_2d", (20, 10, 120, 60), "red circle")], line=7)
    row = GroundingBuilder(DENSE, emit_norm="norm1000", object_order="reading").build([record])
    roles = [m["role"] for m in row["messages"]]
    assert roles == ["system", "user", "assistant"]
    assert row["messages"][1]["content"].startswith("<image>") and row["messages"][1]["content"].count("<image>") == 1
    assert row["images"] == ["/data/img7.png"]
    assert row[ROW_SOURCE_KEY] == "/data/train.jsonl:7"
    geometry = json.loads(row[ROW_GEOMETRY_KEY])
    assert geometry[0]["objects"][0] == {"kind": "bbox_2d", "points": [20, 10, 120, 60], "desc": "red circle"}
    builder = GroundingBuilder(DENSE, emit_norm="norm1000", object_order="reading")
    inference_row = builder.build([record], with_answer=False)
    assert [m["role"] for m in inference_row["messages"]] == ["system", "user"]


def test_grouped_records_say_which_image_each_object_is_on():
    first = _record([("bbox_2d", (20, 10, 120, 60), "a")], line=1)
    second = _record([("bbox_2d", (0, 0, 100, 50), "b")], line=2)
    row = GroundingBuilder(DENSE, emit_norm="norm1000", object_order="reading").build([first, second])
    assert row["messages"][1]["content"].count("<image>") == 2
    assert [e["image"] for e in json.loads(row["messages"][2]["content"])] == [1, 2]


def test_grouping_is_deterministic_per_seed_and_loses_nothing():
    records = [_record([], line=i) for i in range(1, 8)]
    groups = group_records(records, 3, seed=5)
    assert [len(g) for g in groups] == [3, 3, 1]
    assert sorted(r.source.line for g in groups for r in g) == list(range(1, 8))
    assert groups == group_records(records, 3, seed=5)
    assert groups != group_records(records, 3, seed=6)
    assert group_records(records, 1, seed=5) == [[r] for r in records]
    with pytest.raises(ValueError):
        group_records(records, 0, seed=5)


def test_preprocessor_builds_one_row_per_group():
    records = [_record([("bbox_2d", (0, 0, 10, 10), "x")], line=i) for i in range(1, 6)]
    rows = GroupingPreprocessor(make_builder(DENSE, "norm1000", "reading"), images_per_user_turn=2, seed=1)(records)
    assert len(rows) == 3
    assert sum(len(r["images"]) for r in rows) == 5


def test_summary_scheme_trains_on_the_summary_and_refuses_records_without_one():
    builder = make_builder(get_prompt_scheme("summary"), "norm1000", "reading")
    assert isinstance(builder, SummaryBuilder)
    assert builder.answer([_record([], summary="two circles")]) == "two circles"
    with pytest.raises(ConfigError, match="train.jsonl:3"):
        builder.answer([_record([], line=3)])


def test_prompt_overrides_replace_scheme_text_and_unknown_scheme_lists_valid_ones():
    scheme = get_prompt_scheme("dense", system="sys", user="find things")
    assert (scheme.system, scheme.user) == ("sys", "find things")
    assert get_prompt_scheme("dense").user == PROMPT_SCHEMES["dense"].user
    with pytest.raises(KeyError, match="dense"):
        get_prompt_scheme("nope")


def test_grounding_scheme_asks_about_each_description_once():
    record = _record([("bbox_2d", (20, 10, 120, 60), "red circle"), ("bbox_2d", (0, 0, 10, 10), "tag"),
                      ("bbox_2d", (150, 50, 190, 90), "red circle")])
    builder = make_builder(get_prompt_scheme("grounding"), "norm1000", "reading")
    assert builder.focuses([record]) == [{"desc": "red circle"}, {"desc": "tag"}]
    row = builder.build([record], desc="red circle")
    assert 'Locate every "red circle"' in row["messages"][1]["content"]
    answer = json.loads(row["messages"][2]["content"])
    assert [e["label"] for e in answer] == ["red circle", "red circle"]
    assert len(json.loads(row[ROW_GEOMETRY_KEY])[0]["objects"]) == 2  # the checks see the same objects
    rows = GroupingPreprocessor(builder, images_per_user_turn=1, seed=0)([record, _record([], line=2)])
    assert len(rows) == 2  # one per description; a record without objects has nothing to ask
    with pytest.raises(ValueError, match="one description"):
        builder.build([record])


def test_the_registry_refuses_a_name_twice_and_lists_names_it_does_not_know():
    from dataclasses import replace

    from src.datasets.builders import BUILDERS, BaseBuilder, register_builder

    with pytest.raises(ValueError, match="builder 'grounding' is registered already \\(by GroundingBuilder\\)"):
        register_builder("grounding", type("Other", (BaseBuilder,), {}))
    with pytest.raises(TypeError, match="must subclass BaseBuilder"):
        register_builder("not-a-builder", dict)
    assert "not-a-builder" not in BUILDERS
    with pytest.raises(ValueError, match="unknown builder 'chat'; registered: description, grounding, summary"):
        make_builder(replace(DENSE, builder="chat"), "norm1000", "reading")


def test_every_shipped_scheme_names_a_registered_builder():
    from src.datasets.builders import BUILDERS

    assert {s.builder for s in PROMPT_SCHEMES.values()} <= set(BUILDERS)
    assert type(make_builder(get_prompt_scheme("grounding"), "norm1000", "reading")).__name__ == "DescriptionBuilder"
