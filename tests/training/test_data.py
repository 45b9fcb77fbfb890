"""Training data: MMEB-train / ViDoRe-train / generic rows, numbered bad rows, held-out split."""

from __future__ import annotations

import io
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from metaembed.training.collator import collate
from metaembed.training.data import (
    DataError,
    add_placeholder_images,
    load_source,
    load_training_data,
    split_held_out,
)
from tests.training.training_support import write_jsonl


def _png(path, colour=(200, 0, 0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), colour).save(path)
    return path


def _png_bytes(colour):
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _mmeb_row(i, image="img/a.png"):
    return {
        "qry": f"<|image_1|>\nRepresent the given image for classification {i}",
        "qry_image_path": image,
        "pos_text": f"label {i}",
        "pos_image_path": "",
        "neg_text": f"<|image_1|>\nother {i}",
        "neg_image_path": "img/b.png",
    }


def test_mmeb_train_placeholder_becomes_the_items_image(tmp_path):
    _png(tmp_path / "img/a.png")
    _png(tmp_path / "img/b.png")
    path = write_jsonl(tmp_path / "ImageNet_1K.jsonl", [_mmeb_row(0)])
    (example,) = load_source({"path": str(path)}).examples
    assert example.query.text == "Represent the given image for classification 0"
    assert example.query.image == tmp_path / "img/a.png"
    assert example.positive.text == "label 0" and example.positive.image is None
    assert (
        example.negatives[0].text == "other 0"
        and example.negatives[0].image == tmp_path / "img/b.png"
    )
    assert example.subset == "ImageNet_1K" and example.row == 0
    assert "<|image_1|>" not in (example.query.text + example.negatives[0].text)


def test_vidore_train_parquet_with_image_bytes(tmp_path):
    table = pa.table(
        {
            "query": ["what is the revenue?", "who signed?"],
            "image": [
                {"bytes": _png_bytes((0, 0, 200)), "path": None},
                {"bytes": _png_bytes((0, 200, 0)), "path": None},
            ],
            "image_filename": ["a.png", "b.png"],
            "source": ["docvqa", "arxiv"],
        }
    )
    pq.write_table(table, tmp_path / "train.parquet")
    examples = load_source(str(tmp_path / "train.parquet")).examples
    assert [e.subset for e in examples] == ["docvqa", "arxiv"]
    assert examples[0].query.text == "what is the revenue?" and examples[0].query.image is None
    assert examples[1].positive.image.convert("RGB").getpixel((0, 0)) == (0, 200, 0)
    assert examples[0].negatives == ()


def test_generic_schema_and_folder_subsets(tmp_path):
    write_jsonl(
        tmp_path / "data/a.jsonl",
        [
            {
                "query_text": "q",
                "query_instruction": "Find:",
                "positive_text": "p",
                "negative_text": ["n1", "n2"],
            }
        ],
    )
    write_jsonl(tmp_path / "data/b.jsonl", [{"query_text": "q2", "positive_text": "p2"}])
    data = load_training_data([str(tmp_path / "data")])
    assert [e.subset for e in data.examples] == ["a", "b"]
    assert data.examples[0].query.instruction == "Find:"
    assert [n.text for n in data.examples[0].negatives] == ["n1", "n2"]


def _bad_rows(tmp_path):
    _png(tmp_path / "img/a.png")
    _png(tmp_path / "img/b.png")
    (tmp_path / "img/broken.png").write_bytes(b"not a png")
    rows = [
        _mmeb_row(0),
        {"qry": "text only", "pos_image_path": ""},  # row 1: no pos_text
        _mmeb_row(2, image="img/missing.png"),  # row 2: missing image
        "{not json",  # row 3: broken line
        _mmeb_row(4, image="img/broken.png"),  # row 4: unreadable image
        {**_mmeb_row(5), "qry_image_path": ""},  # row 5: placeholder without image
        _mmeb_row(6),
    ]
    return write_jsonl(tmp_path / "train.jsonl", rows)


def test_bad_rows_are_fatal_with_their_row_number(tmp_path):
    path = _bad_rows(tmp_path)
    with pytest.raises(
        DataError, match=r"train.jsonl row 1: missing field\(s\) \['pos_text'\].*on_invalid: skip"
    ):
        load_training_data([str(path)])


def test_bad_rows_are_skipped_and_reported(tmp_path, caplog):
    path = _bad_rows(tmp_path)
    with caplog.at_level(logging.WARNING):
        data = load_training_data([str(path)], on_invalid="skip")
    assert [e.row for e in data.examples] == [0, 6]
    reasons = {row: why for _, row, why in data.skipped}
    assert sorted(reasons) == [1, 2, 3, 4, 5]
    assert "not found" in reasons[2] and "invalid JSON" in reasons[3]
    assert "unreadable" in reasons[4] and "<|image_1|>" in reasons[5]
    assert "skipped 5 bad training rows" in caplog.text and "row 4" in caplog.text


def test_held_out_split_is_per_subset_and_deterministic(toy_data):
    examples = load_training_data([str(toy_data)]).examples
    train, held = split_held_out(examples, 0.05, seed=3)
    assert sorted(e.subset for e in held) == ["colours"] * 3 + ["shapes"] * 3
    assert len(train) + len(held) == len(examples)
    assert not {(e.source, e.row) for e in held} & {(e.source, e.row) for e in train}
    again, held_again = split_held_out(examples, 0.05, seed=3)
    assert [(e.source, e.row) for e in held_again] == [(e.source, e.row) for e in held]
    _, other = split_held_out(examples, 0.05, seed=4)
    assert [(e.source, e.row) for e in other] != [(e.source, e.row) for e in held]


def test_placeholder_images_for_text_only_items(toy_data):
    example = load_training_data([str(toy_data)]).examples[0]
    padded = add_placeholder_images(example, size=28)
    assert padded.query.image.size == (28, 28) and padded.negatives[0].has_image
    assert padded.query.text == example.query.text


def test_collate_needs_enough_negatives(toy_data):
    examples = load_training_data([str(toy_data)]).examples[:3]
    batch = collate(examples, num_hard_negatives=1)
    assert len(batch) == 3 and len(batch.negatives) == 3
    with pytest.raises(ValueError, match="row 0 has 1 hard negatives but num_hard_negatives is 2"):
        collate(examples, num_hard_negatives=2)


def test_hub_dataset_source_through_datasets(monkeypatch, tmp_path):
    import sys
    import types

    calls = []
    page = Image.new("RGB", (16, 16), (9, 9, 9))

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        if name == "TIGER-Lab/MMEB-train":
            return [{"qry": "a query", "pos_text": "its answer", "neg_text": "not it"}]
        return [{"query": "q0", "image": page, "source": "tatdqa"}, {"query": "q1"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    spec = {"path": "hf:vidore/colpali_train_set", "split": "train"}
    data = load_training_data([spec], on_invalid="skip")
    assert calls == [("vidore/colpali_train_set", None, "train")]
    assert data.examples[0].positive.image is page and data.examples[0].subset == "tatdqa"
    assert data.skipped == [("hf:vidore/colpali_train_set", 1, "missing field(s) ['image']")]
    mmeb = {"path": "hf:TIGER-Lab/MMEB-train", "config": "CIRR", "split": "original"}
    assert load_training_data([mmeb, spec], on_invalid="skip").examples[0].subset == "CIRR"
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ValueError, match="pip install datasets"):
        load_training_data([spec])
