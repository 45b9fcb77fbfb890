"""The Hub code path (``datasets.load_dataset``), served from local data in the Hub's features.

Skipped without the optional ``datasets`` package (the ``hub`` extra).
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

datasets = pytest.importorskip("datasets")


@pytest.fixture
def fake_hub(monkeypatch, vidore_v2_folder, mmeb_folder):
    """Serve ``load_dataset(name, config, split=..., revision=...)`` from the local fixtures."""
    calls = []

    def load_dataset(name, config=None, split=None, revision=None):
        calls.append((name, config, split, revision))
        folder = (vidore_v2_folder if name.startswith("vidore/") else mmeb_folder) / config
        rows = pq.read_table(next(folder.glob("*.parquet"))).to_pylist()
        if (
            config == "corpus"
        ):  # the Hub stores pages as an Image feature, decoded to PIL by default
            features = datasets.Features(
                {"corpus-id": datasets.Value("int64"), "image": datasets.Image()}
            )
            return datasets.Dataset.from_list(rows, features=features)
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_vidore_v2_from_the_hub(fake_hub, tmp_path, encoder):
    from metaembed.evaluation.runner import run_vidore
    from metaembed.evaluation.vidore import load_vidore

    task, revision = load_vidore(
        "vidore/esg_reports_v2",
        "v2",
        language="english",
        image_dir=tmp_path / "pages",
        revision="abc",
    )
    assert revision == "hub-abc-english"
    assert [c[1] for c in fake_hub] == ["corpus", "queries", "qrels"] and fake_hub[0][3] == "abc"
    assert task.query_ids == ("10", "11") and len(task.corpus_ids) == 5
    assert all(item.image.parent == tmp_path / "pages" for item in task.corpus_items)
    result = run_vidore(encoder, [task], "1x1", show_progress=False, metrics=("recall@1",))
    assert result.scores["1x1"]["esg_reports_v2"] == pytest.approx(0.75)  # as from the local copy


def test_mmeb_from_the_hub(fake_hub, mmeb_folder):
    from metaembed.evaluation.mmeb import load_mmeb

    tasks, revision = load_mmeb(
        "TIGER-Lab/MMEB-eval", ["MSCOCO_t2i"], images_root=mmeb_folder / "eval_images"
    )
    assert revision == "hub-main" and fake_hub == [
        ("TIGER-Lab/MMEB-eval", "MSCOCO_t2i", "test", None)
    ]
    assert len(tasks[0].rows) == 5 and tasks[0].rows[0].candidates[0].image.is_file()
