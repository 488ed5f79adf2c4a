"""The geometry-kind registry (src/datasets/kinds/): its order, each kind's rules through one implementation,
points and polygons in the contract (chunked and per-record paths alike), and the similarity rules."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from src.datasets import contract as c
from src.datasets import geometry
from src.datasets import kinds as K
from src.datasets.columns import RecordTable, record_columns
from src.datasets.validation import load_records


def test_the_registry_lists_every_kind_in_its_stored_order():
    assert K.KEYS == ("bbox_2d", "quad", "point_2d", "polygon")
    assert [K.by_index(i).key for i in range(4)] == list(K.KEYS)
    assert c.GEOMETRY_KINDS == K.KEYS and c.OBJECT_KEYS[:4] == K.KEYS
    with pytest.raises(KeyError, match="known: bbox_2d, quad, point_2d, polygon"):
        K.get("circle")


def test_a_kind_module_is_found_by_listing_the_package():
    # Every module but base.py holds one KIND: adding a kind is adding a module.
    folder = Path(K.__file__).parent
    modules = sorted(p.stem for p in folder.glob("*.py") if p.stem not in ("__init__", "base"))
    assert sorted(type(k).__module__.rsplit(".", 1)[1] for k in K.KINDS.values()) == modules


@pytest.mark.parametrize(("key", "values", "reason"), [
    ("bbox_2d", [5, 2, 5, 8], "zero-area box (x1 == x2)"),
    ("bbox_2d", [9, 2, 3, 8], "x2 < x1: corners are swapped"),
    ("bbox_2d", [1, 9, 3, 2], "y2 < y1: corners are swapped"),
    ("quad", [0, 0, 5, 5, 5, 0, 0, 5], "invalid quad: self-crossing edges (bow-tie)"),
    ("quad", [0, 0, 5, 0, 5, 0, 0, 5], "invalid quad: repeated vertices"),
    ("polygon", [0, 0, 10, 0, 0, 10, 10, 10], "invalid polygon: self-crossing edges"),
    ("polygon", [0, 0, 10, 0, 10, 0, 5, 5], "invalid polygon: repeated vertices"),
    ("polygon", [0, 0, 5, 5, 10, 10], "invalid polygon: zero area"),
    ("point_2d", [float("nan"), 1], "non-finite coordinates"),
])
def test_one_object_and_many_give_the_same_reason(key, values, reason):
    kind = K.get(key)
    assert kind.problem(values).startswith(reason)
    good = {"bbox_2d": [1, 2, 3, 4], "quad": [0, 0, 5, 0, 5, 5, 0, 5], "point_2d": [1, 1],
            "polygon": [0, 0, 10, 0, 10, 10, 0, 10]}[key]
    codes = kind.problem_codes(np.array([good, values, good], dtype=float)) if len(good) == len(values) else None
    if codes is not None:
        assert codes[0] == 0 and codes[2] == 0 and kind.problems[codes[1]].startswith(reason)


def test_polygon_rules_for_four_vertices_are_the_quad_rules():
    rng = np.random.default_rng(0)
    quads = rng.integers(0, 6, size=(500, 8)).astype(float)
    codes = geometry.polygon_problem_codes(quads)
    assert [geometry.quad_is_valid(q) for q in quads] == [geometry.QUAD_PROBLEMS[k] for k in codes]
    assert set(codes.tolist()) == {0, 2, 3, 4}


def test_canonical_polygon_is_clockwise_from_the_top_left_most_vertex():
    pentagon = [10, 0, 20, 8, 16, 20, 4, 20, 0, 8]  # clockwise on screen from the top
    ccw_from_bottom = [16, 20, 20, 8, 10, 0, 0, 8, 4, 20]
    expected = [0, 8, 10, 0, 20, 8, 16, 20, 4, 20]  # from (0, 8): x + y = 8 is the smallest
    assert geometry.canonical_polygon([pentagon]).tolist() == [expected]
    assert geometry.canonical_polygon([ccw_from_bottom]).tolist() == [expected]
    quad = [30, 15, 20, 15, 20, 5, 30, 5]
    assert geometry.canonical_polygon([quad]).tolist() == geometry.canonical_quad8([quad]).tolist()


def test_a_polygon_with_many_vertices_is_checked_in_chunks():
    t = np.linspace(0, 2 * np.pi, 300, endpoint=False)
    circle = np.stack([50 + 40 * np.cos(t), 50 + 40 * np.sin(t)], axis=1).reshape(1, -1)
    crossed = circle.copy()
    crossed[0, [0, 1, 300, 301]] = crossed[0, [300, 301, 0, 1]]  # swap two far-apart vertices
    codes = geometry.polygon_problem_codes(np.repeat(np.concatenate([circle, crossed]), 40, axis=0))
    assert codes.tolist() == [0, 3] * 40 or sorted(set(codes.tolist())) == [0, 3]
    assert codes[0] == 0 and codes[-1] == 3


def _write(tmp_path: Path, objects: list[dict], width: int = 100, height: int = 80) -> Path:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"images": ["a.png"], "objects": objects, "width": width, "height": height}) + "\n")
    return path


def test_points_and_polygons_validate_and_are_stored_canonically(tmp_path):
    objects = [{"point_2d": [5, 6], "desc": "dot"}, {"polygon": [16, 20, 20, 8, 10, 0, 0, 8, 4, 20], "desc": "leaf"},
               {"point_2d": [100.5, 3], "desc": "edge dot"}, {"polygon": [1, 1, 9, 1, 5, 7], "ignore": True}]
    (rec,), problems = load_records(_write(tmp_path, objects), check_image=False)
    assert problems == []
    assert [(o.kind, o.points) for o in rec.objects] == [
        ("point_2d", (5.0, 6.0)), ("polygon", (0.0, 8.0, 10.0, 0.0, 20.0, 8.0, 16.0, 20.0, 4.0, 20.0)),
        ("point_2d", (100.0, 3.0)), ("polygon", (1.0, 1.0, 9.0, 1.0, 5.0, 7.0))]
    assert rec.clamped == 1 and rec.objects[3].ignore
    # the columns keep each object's value count; a record comes back whole from them
    table = RecordTable(record_columns([rec]), rec.source.file)
    assert table.columns["value_counts"].tolist() == [2, 10, 2, 6] and table[0] == rec
    assert c.object_to_json(rec.objects[1]) == {"polygon": [0, 8, 10, 0, 20, 8, 16, 20, 4, 20], "desc": "leaf"}


@pytest.mark.parametrize(("obj", "field", "message"), [
    ({"point_2d": [1, 2, 3], "desc": "a"}, "objects[0].point_2d", "must be a list of 2 numbers [x, y]"),
    ({"polygon": [1, 2, 3, 4], "desc": "a"}, "objects[0].polygon", "must be a list of at least 6 numbers"),
    ({"polygon": [1, 2, 3, 4, 5, 6, 7], "desc": "a"}, "objects[0].polygon", "an even count"),
    ({"polygon": [0, 0, 10, 0, 0, 10, 10, 10], "desc": "a"}, "objects[0].polygon",
     "invalid polygon: self-crossing edges"),
    ({"point_2d": [150, 2], "desc": "a"}, "objects[0].point_2d", "outside the image"),
    ({"point_2d": [1, 2], "polygon": [1, 1, 9, 1, 5, 7], "desc": "a"}, "objects[0]",
     "needs exactly one of bbox_2d, quad, point_2d or polygon, found both"),
])
def test_bad_points_and_polygons_are_named(tmp_path, obj, field, message):
    records, (problem,) = load_records(_write(tmp_path, [obj]), check_image=False)
    assert records == [] and problem.field == field and message in problem.message


def test_the_chunked_path_agrees_with_record_by_record_on_every_kind(tmp_path, monkeypatch):
    from src.datasets import validation

    rng = random.Random(3)
    choices = [
        lambda: {"bbox_2d": [10, 10, rng.uniform(20, 101.5), 40], "desc": "box"},
        lambda: {"point_2d": [rng.uniform(-1.5, 101.5), rng.uniform(0, 80)], "desc": "dot"},
        lambda: {"point_2d": [1, 2, 3], "desc": "dot"},
        lambda: {"polygon": [16, 20, 20, 8, 10, 0, 0, 8, 4, 20], "desc": "leaf"},
        lambda: {"polygon": [0, 0, 10, 0, 0, 10, 10, 10], "desc": "leaf"},
        lambda: {"polygon": [1, 1, 9, 1, 5, 7, 3], "desc": "leaf"},
        lambda: {"polygon": [1, 1, 9, 1, 5, 7], "ignore": True},
        lambda: {"quad": [58, 50, 60, 12, 10, 10, 12, 48], "desc": "box"},
        lambda: {"polygon": [1, 1, 9, 1, 5, 7], "point_2d": [1, 1], "desc": "two"},
    ]
    lines = []
    for _ in range(200):
        objects = [rng.choice(choices)() for _ in range(rng.randint(0, 5))]
        if rng.random() < 0.6:
            objects = [o for o in objects if o.get("desc") in ("box", "dot", "leaf") and len(o) == 2]
        lines.append(json.dumps({"images": ["a.png"], "objects": objects, "width": 100, "height": 80}))
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert sum(validation._structure(json.loads(line)) is not None for line in lines) > 80
    monkeypatch.setattr(validation, "CHUNK_LINES", 32)
    fast = load_records(path, check_image=False)
    by_record, problems = [], []
    for number, line in enumerate(lines, start=1):
        record, found = c.parse_record(json.loads(line), c.SourceRef(file=str(path), line=number), tmp_path,
                                       check_image=False)
        problems += found
        by_record += [record] if record else []
    assert fast[0] == by_record and [r.clamped for r in fast[0]] == [r.clamped for r in by_record]
    assert [str(p) for p in fast[1]] == [str(p) for p in problems]
    kinds = {o.kind for r in by_record for o in r.objects}
    assert kinds == {"bbox_2d", "quad", "point_2d", "polygon"} and len(fast[1]) > 20


# ---------------------------------------------------------------------------- similarity


def test_a_point_matches_the_region_it_lies_in_and_a_point_near_it():
    sim = K.pairwise_similarity(["point_2d", "point_2d", "point_2d"], [[5, 5], [12, 5], [10, 10]],
                                ["bbox_2d", "point_2d", "polygon"], [[0, 0, 10, 10], [15, 5], [0, 0, 10, 0, 10, 10]],
                                size=(100, 100))
    np.testing.assert_allclose(sim, [[1.0, 0.0, 1.0],   # inside the box and on the triangle's edge; 10 px away
                                     [0.0, 0.7, 0.0],   # 3 px = 0.03 image sizes: 1 - 0.03 / 0.1
                                     [1.0, 1 - 0.5 ** 0.5, 1.0]])  # on the box's corner (edges count)
    assert K.similarity("bbox_2d", [0, 0, 10, 10], "point_2d", [5, 5]) == 1.0  # either side
    # distance in image sizes: the same 5 px is half as far in a twice wider image along x
    assert K.similarity("point_2d", [0, 0], "point_2d", [5, 0], size=(100, 100)) == pytest.approx(0.5)
    assert K.similarity("point_2d", [0, 0], "point_2d", [5, 0], size=(200, 100)) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="needs the size"):
        K.similarity("point_2d", [0, 0], "point_2d", [5, 0])


def test_polygon_iou_against_every_region_kind():
    square = [0, 0, 10, 0, 10, 10, 0, 10]
    half = [0, 0, 5, 0, 5, 10, 0, 10, 0, 5]  # a 5-vertex polygon covering the left half
    sim = K.pairwise_similarity(["polygon"], [half], ["bbox_2d", "quad", "polygon"],
                                [[0, 0, 10, 10], square, square])
    np.testing.assert_allclose(sim, [[0.5, 0.5, 0.5]])
    crowd = K.pairwise_similarity(["polygon"], [half], ["bbox_2d"], [[0, 0, 10, 10]], crowd=[True])
    np.testing.assert_allclose(crowd, [[1.0]])  # over the prediction's own area
    as_box = K.similarity("polygon", [0, 0, 10, 0, 0, 10], "bbox_2d", [0, 0, 10, 10], mode="bbox")
    assert as_box == 1.0 and K.similarity("polygon", [0, 0, 10, 0, 0, 10], "bbox_2d", [0, 0, 10, 10]) == 0.5


def test_the_every_kind_prompt_names_every_kind():
    # src/config sits below the registry and cannot ask it: a new kind is added to this scheme's text too.
    from src.config.prompts import PROMPT_SCHEMES

    scheme = PROMPT_SCHEMES["dense_every_kind"]
    assert scheme.builder == "grounding" and all(f'"{key}"' in scheme.user for key in K.KEYS)


def test_one_clamping_rule_counts_what_it_moves_and_refuses_what_is_far_out():
    clipped, moved, outside = geometry.clamp_near([-0.5, 3, 40.75, 30], 40, 30, 1.0)
    assert clipped.tolist() == [0.0, 3.0, 40.0, 30.0] and moved == 2 and not outside
    assert geometry.clamp_near([-1.5, 3], 40, 30, 1.0)[2]
