"""Openclipart parsing, flattening, split, tasks and training pairs, on a synthetic tree."""

from __future__ import annotations

import pytest
from PIL import Image

from metaembed.data.clipart_tasks import build_tasks, eligible_images, split_images
from metaembed.data.clipart_training import training_pairs, write_mmeb_jsonl
from metaembed.data.openclipart import (
    INSTALL_COMMAND,
    ClipartNotInstalledError,
    check_installed,
    load_openclipart,
    materialise_rgb,
)
from metaembed.training.batching import BatchSchedule


@pytest.fixture()
def clipart(clipart_root, tmp_path):
    return load_openclipart(clipart_root, cache_path=tmp_path / "meta.json")


def test_missing_packages_name_the_install_command(tmp_path):
    with pytest.raises(ClipartNotInstalledError) as error:
        check_installed(tmp_path)
    assert INSTALL_COMMAND in str(error.value)


def test_metadata_of_the_work_not_of_the_artist(clipart):
    by_id = {record.image_id: record for record in clipart}
    apple = by_id["food/fruit/apple_01"]
    assert apple.title == "Red Apple"  # not "Some Artist", the agent's dc:title
    assert apple.keywords == ("fruit", "apple")  # "food" is a category folder name
    assert apple.description == "A shiny red apple"
    assert (apple.category, apple.subcategory) == ("food", "fruit")
    assert by_id["food/pear_02"].title == "Pear & leaf"  # entities unescaped
    assert by_id["food/pear_02"].subcategory == ""
    assert by_id["unsorted/thing"].keywords == ("thing",)
    assert not any(record.image_id.startswith("unsorted/duplicates") for record in clipart)


def test_cache_is_reused(clipart, tmp_path):
    again = load_openclipart(tmp_path / "openclipart", cache_path=tmp_path / "meta.json")
    assert again == clipart


def test_flattening_puts_transparent_drawings_on_white(clipart, tmp_path):
    flattened = materialise_rgb(clipart[:2], tmp_path / "rgb", max_side=8)
    with Image.open(flattened[0].png_path) as picture:
        assert picture.mode == "RGB"
        assert max(picture.size) == 8  # 12x6 shrunk, aspect kept
        assert picture.getpixel((0, 0)) == (255, 255, 255)


def test_split_is_fixed_by_seed_disjoint_and_skips_collection_titles(clipart):
    eligible = eligible_images(clipart, max_title_share=5)
    assert not any(record.title == "Lemon SVG theme" for record in eligible)  # shared by 7 images
    first = split_images(clipart, heldout_size=3, seed=1)
    again = split_images(clipart, heldout_size=3, seed=1)
    other = split_images(clipart, heldout_size=3, seed=2)
    assert first == again
    assert {r.image_id for r in first.heldout} != {r.image_id for r in other.heldout}
    assert not {r.image_id for r in first.heldout} & {r.image_id for r in first.train}
    assert len(first.heldout) + len(first.train) == len(eligible)
    with pytest.raises(ValueError, match="heldout_size"):
        split_images(clipart, heldout_size=len(eligible))


def test_tasks_have_the_right_relevance(clipart):
    images = eligible_images(clipart)
    tasks = build_tasks(images, categories=("animals", "food", "shapes"))
    title = tasks["t2i-title"]
    cats = [r.image_id for r in images if r.image_id.startswith("animals/cat")]
    # "Cat 1" and "cat_2" normalise to the same title: one query, both images relevant
    cat_queries = [q for q in title.query_ids if q in cats]
    assert len(cat_queries) == 1 and set(title.qrels[cat_queries[0]]) == set(cats)
    assert len(tasks["t2i-description"].queries) == 2
    assert "shapes/star" not in tasks["t2i-keywords"].qrels  # no keywords, no query
    classification = tasks["classification"]
    assert "unsorted/thing" not in classification.qrels
    assert classification.qrels["food/pear_02"] == {"category:food": 1}
    i2t = tasks["i2t-title"]
    assert len(i2t.candidates) == len(images) - 1  # the two cats share one title candidate


def test_subset_batches_are_single_task_with_distinct_titles(clipart):
    pairs = training_pairs(eligible_images(clipart))
    schedule = BatchSchedule(pairs, batch_size=4, sampler="subset", seed=0)
    batches = [schedule.indices(step) for step in range(2 * schedule.steps_per_epoch)]
    assert batches
    for batch in batches:
        assert len({pairs[i].subset for i in batch}) == 1
        assert len({pairs[i].positive_id for i in batch}) == len(batch)
    again = BatchSchedule(pairs, batch_size=4, sampler="subset", seed=0)
    assert [again.indices(step) for step in range(len(batches))] == batches


def test_mmeb_jsonl_rows(clipart, tmp_path):
    import json

    pairs = training_pairs(eligible_images(clipart))
    path = write_mmeb_jsonl(pairs, tmp_path / "train.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == len(pairs)
    image_queries = [row for row in rows if row["qry_image_path"]]
    assert image_queries and all(row["qry"].startswith("<|image_1|>") for row in image_queries)
    from metaembed.training.data import parse_row  # the general trainer reads them back

    for pair, row in zip(pairs, rows, strict=True):
        example = parse_row(row, "mmeb", tmp_path, check_images=False)
        assert (example.query.image is None) == (pair.query.image is None)
        assert pair.query.text is None or pair.query.text in (example.query.text or "")
        assert (example.positive.image is None) == (pair.positive.image is None)
