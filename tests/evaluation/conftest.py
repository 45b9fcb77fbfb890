"""Fixtures for evaluation tests: benchmark folders in the real schemas and a stand-in encoder.

The fixture builders write parquet files (pyarrow) and PNG images (PIL) in
the layouts of the Hugging Face Hub copies of MMEB and ViDoRe (see
../shared/DATASETS.md); nothing binary is committed.

The stand-in encoder maps an item to the colour it shows or names: an image
to the palette colour nearest its mean pixel, a text to the first colour word
it contains. Its first vector encodes only that colour; later vectors add
item-specific noise, so correct answers are known in advance.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from metaembed.budget import Budget
from metaembed.items import Item, load_image

PALETTE = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (230, 220, 30),
    "purple": (140, 30, 160),
}


def colour_png(colour: str, size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), PALETTE[colour]).save(buffer, format="PNG")
    return buffer.getvalue()


def write_parquet(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


@dataclass
class StandInConfig:
    num_query_tokens: int = 4
    num_candidate_tokens: int = 8
    groups: tuple = (Budget(1, 1), Budget(2, 4), Budget(4, 8))

    def num_vectors(self, role: str) -> int:
        return self.num_query_tokens if role == "query" else self.num_candidate_tokens

    def to_dict(self) -> dict:
        return {"rq": self.num_query_tokens, "rc": self.num_candidate_tokens}


@dataclass
class StandInEncoder:
    """Deterministic encoder honouring the MetaEmbedModel encode contract."""

    dim: int = 16
    config: StandInConfig = field(default_factory=StandInConfig)
    calls: list = field(default_factory=list)

    def concept(self, item: Item) -> str:
        if item.image is not None:
            pixels = torch.tensor(
                list(load_image(item.image).resize((1, 1)).getpixel((0, 0))), dtype=torch.float32
            )
            return min(
                PALETTE, key=lambda c: float(((torch.tensor(PALETTE[c]) - pixels) ** 2).sum())
            )
        words = (item.text or "").lower().split()
        return next((w for w in words if w in PALETTE), "none")

    def _vector(self, seed_text: str) -> torch.Tensor:
        seed = int(hashlib.sha256(seed_text.encode()).hexdigest()[:8], 16)
        return torch.randn(self.dim, generator=torch.Generator().manual_seed(seed))

    def _encode(self, items, role):
        self.calls.append((role, len(items)))
        count = self.config.num_vectors(role)
        out = torch.empty(len(items), count, self.dim)
        for i, item in enumerate(items):
            base = self._vector("concept:" + self.concept(item))
            for r in range(count):
                noise = self._vector(f"{role}:{r}:{item.text}:{item.image}")
                out[i, r] = base + 0.1 * r * noise
        return torch.nn.functional.normalize(out, dim=-1)

    def encode_queries(self, items, budget=None, batch_size=16, show_progress=True):
        return self._encode(items, "query")

    def encode_candidates(self, items, budget=None, batch_size=16, show_progress=True):
        return self._encode(items, "candidate")


@pytest.fixture
def encoder() -> StandInEncoder:
    return StandInEncoder()


def mmeb_classification_rows(image_prefix: str) -> list[dict]:
    labels = list(PALETTE)
    rows = []
    for colour in labels:
        others = [c for c in labels if c != colour]
        rows.append(
            {
                "qry_inst": "<|image_1|> Represent the given image for classification",
                "qry_text": "<|image_1|>\n",
                "qry_img_path": f"{image_prefix}/{colour}.png",
                "tgt_inst": None,
                "tgt_text": [colour, *others],
                "tgt_img_path": [""] * len(labels),
            }
        )
    return rows


def mmeb_retrieval_rows(image_prefix: str) -> list[dict]:
    captions = {
        "red": "un carré red — 红色",
        "green": "grüne Wiese green",
        "blue": "blue ciel bleu",
        "yellow": "yellow 黄色 ☀",
        "purple": "purple ungeheuer",
    }
    rows = []
    for colour, caption in captions.items():
        others = [c for c in PALETTE if c != colour]
        rows.append(
            {
                "qry_inst": "Find me an everyday image that matches the given caption:",
                "qry_text": caption,
                "qry_img_path": "",
                "tgt_inst": "Represent the given image.",
                "tgt_text": ["<|image_1|>\n"] * len(PALETTE),
                "tgt_img_path": [f"{image_prefix}/{c}.png" for c in [colour, *others]],
            }
        )
    return rows


@pytest.fixture
def mmeb_folder(tmp_path) -> Path:
    """Two MMEB tasks (ImageNet-1K: image->label, MSCOCO_t2i: caption->image) with images."""
    root = tmp_path / "mmeb"
    for colour in PALETTE:
        path = root / "eval_images" / "ImageNet-1K" / f"{colour}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(colour_png(colour))
        coco = root / "eval_images" / "MSCOCO_t2i" / f"{colour}.png"
        coco.parent.mkdir(parents=True, exist_ok=True)
        coco.write_bytes(colour_png(colour))
    write_parquet(
        root / "ImageNet-1K" / "test-00000-of-00001.parquet",
        mmeb_classification_rows("ImageNet-1K"),
    )
    write_parquet(
        root / "MSCOCO_t2i" / "test-00000-of-00001.parquet", mmeb_retrieval_rows("MSCOCO_t2i")
    )
    return root


@pytest.fixture
def vidore_v1_folder(tmp_path) -> Path:
    root = tmp_path / "docvqa_test_subsampled"
    rows = []
    for colour in PALETTE:
        rows.append(
            {
                "query": f"which {colour} page",
                "image": {"bytes": colour_png(colour), "path": f"{colour}.png"},
                "image_filename": f"{colour}.png",
            }
        )
    rows.append(
        {
            "query": None,
            "image": {"bytes": colour_png("red", 9), "path": "extra.png"},
            "image_filename": "extra.png",
        }
    )
    write_parquet(root / "data" / "test-00000-of-00001.parquet", rows)
    return root


@pytest.fixture
def vidore_v2_folder(tmp_path) -> Path:
    root = tmp_path / "esg_reports_v2"
    corpus = [
        {"corpus-id": i, "image": {"bytes": colour_png(c), "path": f"{c}.png"}}
        for i, c in enumerate(PALETTE)
    ]
    queries = [
        {"query-id": 10, "query": "red figures", "language": "english"},
        {"query-id": 11, "query": "blue chart", "language": "english"},
        {"query-id": 12, "query": "graphique green", "language": "french"},
        {"query-id": 13, "query": "no answer here yellow", "language": "english"},
    ]
    qrels = [
        {"query-id": 10, "corpus-id": 0, "score": 2},
        {"query-id": 11, "corpus-id": 2, "score": 1},
        {"query-id": 11, "corpus-id": 3, "score": 1},
        {"query-id": 12, "corpus-id": 1, "score": 1},
    ]
    write_parquet(root / "corpus" / "test-00000-of-00001.parquet", corpus)
    write_parquet(root / "queries" / "test-00000-of-00001.parquet", queries)
    write_parquet(root / "qrels" / "test-00000-of-00001.parquet", qrels)
    return root


@pytest.fixture
def kit() -> SimpleNamespace:
    """The builders above, for tests that need to write their own rows."""
    return SimpleNamespace(
        palette=PALETTE,
        colour_png=colour_png,
        write_parquet=write_parquet,
        classification_rows=mmeb_classification_rows,
        retrieval_rows=mmeb_retrieval_rows,
        StandInEncoder=StandInEncoder,
    )
