"""A synthetic benchmark in MMEB's schema, covering its four meta-tasks, plus a training split.

Tasks (each row: a query and its own candidates, the positive first):

================  ==============  ===========================================================
task              meta-task       query -> candidates
================  ==============  ===========================================================
Syn-Class         Classification  scene image -> "colour shape" label of its large object
Syn-VQA           VQA             image + attribute question -> answers of that question type
Syn-T2I           Retrieval       caption -> scene images (one-attribute hard negatives)
Syn-I2T           Retrieval       scene image -> captions (one-attribute hard negatives)
Syn-Ground        Grounding       image + referring expression -> object crops
Syn-T2I-Crowded   Retrieval, OOD  like Syn-T2I with 4-5 objects (training uses 2-3)
================  ==============  ===========================================================

:func:`write_synthetic_benchmark` writes ``<root>/eval`` (one parquet folder
per task, images under ``eval/images``, a ``tasks.json`` with meta-tasks and
IND/OOD) so :func:`metaembed.evaluation.mmeb.load_mmeb` reads it like MMEB,
and ``<root>/train/train.jsonl`` in MMEB-train's columns (``qry``,
``qry_image_path``, ``pos_text``, ``pos_image_path``, ``neg_text``,
``neg_image_path``; paths relative to ``<root>/train``) from other scenes of
the same generator. Instructions are inline in the texts, as in MMEB, with the
``<|image_1|>`` placeholder before image inputs.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaembed.evaluation import synthetic as syn

__all__ = ["SyntheticConfig", "SYNTHETIC_TASKS", "write_synthetic_benchmark"]

IMG = "<|image_1|>\n"

PROMPTS: dict[str, dict[str, str]] = {
    "mmeb": {
        "class": "Represent the given image for classification (the large object).",
        "vqa": "Represent the given image with the following question: ",
        "t2i_query": "Find me an image that matches the given caption: ",
        "t2i_candidate": "Represent the given image.",
        "i2t_query": "Find an image caption describing the given image.",
        "ground_query": "Select the portion of the image that isolates the object labelled as: ",
        "ground_candidate": "Represent the given cropped image of the object.",
    },
    "short": {
        "class": "classify",
        "vqa": "question: ",
        "t2i_query": "",
        "t2i_candidate": "",
        "i2t_query": "caption",
        "ground_query": "object: ",
        "ground_candidate": "",
    },
}
"""Instruction texts: MMEB's wording, or one or two words (for tiny models, whose few
layers otherwise average the content away among many identical instruction tokens)."""


def _prompt(cfg: SyntheticConfig, key: str, text: str = "", image: bool = False) -> str:
    """Instruction plus text, with the image placeholder first when the item has an image."""
    return (IMG if image else "") + PROMPTS[cfg.prompt_style][key] + text


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes of the synthetic benchmark.

    Parameters
    ----------
    eval_rows : int
        Rows (queries) per evaluation task.
    num_candidates : int
        Candidates per row for retrieval and grounding (classification and VQA
        use every label or answer of the question type).
    train_examples : int
        Training examples per in-distribution task.
    image_size : int
        Side of the rendered scenes in pixels (84 = 3 x 28: one Qwen2-VL merged
        image token per grid cell).
    prompt_style : {"mmeb", "short"}
        Instruction wording (see ``PROMPTS``).
    seed : int
        Seed of everything; evaluation and training scenes use different streams.
    """

    eval_rows: int = 40
    num_candidates: int = 8
    train_examples: int = 200
    image_size: int = 56
    prompt_style: str = "mmeb"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.prompt_style not in PROMPTS:
            raise ValueError(
                f"prompt_style must be one of {tuple(PROMPTS)}, got {self.prompt_style!r}"
            )
        if self.num_candidates < 2 or self.eval_rows < 1 or self.train_examples < 0:
            raise ValueError("need num_candidates >= 2, eval_rows >= 1 and train_examples >= 0")


@dataclass
class _Example:
    query_text: str
    query_image: Any
    candidates: list[tuple[str, Any]]  # (text, image or None); positive first


def _labels() -> list[str]:
    return [f"{colour} {shape}" for colour in syn.COLOURS for shape in syn.SHAPES]


def _classification(rng: random.Random, cfg: SyntheticConfig) -> _Example:
    scene = syn.random_scene(rng, rng.randint(2, 3))
    chosen = rng.randrange(len(scene.objects))  # exactly one large object: the one to classify
    scene = syn.Scene(
        tuple(
            dataclasses.replace(obj, size="large" if i == chosen else "small")
            for i, obj in enumerate(scene.objects)
        )
    )
    large = [scene.objects[chosen]]
    target = f"{large[0].colour} {large[0].shape}"
    labels = [
        target,
        *rng.sample([label for label in _labels() if label != target], len(_labels()) - 1),
    ]
    return _Example(
        _prompt(cfg, "class", image=True),
        syn.render(scene, cfg.image_size),
        [(label, None) for label in labels],
    )


def _vqa(rng: random.Random, cfg: SyntheticConfig) -> _Example:
    scene = syn.random_scene(rng, rng.randint(2, 3))
    obj = rng.choice(scene.objects)
    kind = rng.choice(("colour", "shape", "position", "size"))
    if kind == "colour":
        question, answer, options = (
            f"What colour is the {obj.shape}?",
            obj.colour,
            list(syn.COLOURS),
        )
        if sum(o.shape == obj.shape for o in scene.objects) > 1:
            question = f"What colour is the {obj.shape} at the {obj.position}?"
    elif kind == "shape":
        question, answer, options = (
            f"What shape is the {obj.colour} object?",
            obj.shape,
            list(syn.SHAPES),
        )
        if sum(o.colour == obj.colour for o in scene.objects) > 1:
            question = f"What shape is the {obj.colour} object at the {obj.position}?"
    elif kind == "position":
        question, answer, options = (
            f"Where is the {obj.colour} {obj.shape}?",
            obj.position,
            list(syn.POSITIONS),
        )
    else:
        question, answer, options = (
            f"Is the {obj.colour} {obj.shape} small or large?",
            obj.size,
            list(syn.SIZES),
        )
    negatives = [option for option in options if option != answer]
    rng.shuffle(negatives)
    return _Example(
        _prompt(cfg, "vqa", question, image=True),
        syn.render(scene, cfg.image_size),
        [(answer, None)] + [(n, None) for n in negatives],
    )


def _negative_scenes(
    rng: random.Random, scene: syn.Scene, count: int, num_objects: int
) -> list[syn.Scene]:
    scenes: list[syn.Scene] = []
    while len(scenes) < count:
        hard = len(scenes) < (count + 1) // 2 + 1
        other = syn.perturb(scene, rng) if hard else syn.random_scene(rng, num_objects)
        if other != scene and syn.caption(other) != syn.caption(scene):
            scenes.append(other)
    return scenes


def _retrieval(
    rng: random.Random, cfg: SyntheticConfig, text_to_image: bool, objects: tuple[int, int]
) -> _Example:
    num_objects = rng.randint(*objects)
    scene = syn.random_scene(rng, num_objects)
    scenes = [scene, *_negative_scenes(rng, scene, cfg.num_candidates - 1, num_objects)]
    if text_to_image:
        return _Example(
            _prompt(cfg, "t2i_query", syn.caption(scene)),
            None,
            [
                (_prompt(cfg, "t2i_candidate", image=True), syn.render(s, cfg.image_size))
                for s in scenes
            ],
        )
    return _Example(
        _prompt(cfg, "i2t_query", image=True),
        syn.render(scene, cfg.image_size),
        [(syn.caption(s), None) for s in scenes],
    )


def _grounding(rng: random.Random, cfg: SyntheticConfig) -> _Example:
    scene = syn.random_scene(rng, rng.randint(2, 3))
    image = syn.render(scene, cfg.image_size)
    target = rng.choice(scene.objects)
    crops = [syn.crop_object(image, target)]
    crops += [syn.crop_object(image, obj) for obj in scene.objects if obj is not target]
    while len(crops) < cfg.num_candidates:  # look-alikes: the target with one attribute changed
        alone = syn.perturb(syn.Scene((target,)), rng)
        crops.append(syn.crop_object(syn.render(alone, cfg.image_size), alone.objects[0]))
    text = _prompt(cfg, "ground_query", image=True)
    return _Example(
        text + syn.referring_expression(target),
        image,
        [(_prompt(cfg, "ground_candidate", image=True), crop) for crop in crops],
    )


Builder = Callable[[random.Random, SyntheticConfig], _Example]

SYNTHETIC_TASKS: dict[str, tuple[str, str, Builder]] = {
    "Syn-Class": ("Classification", "IND", _classification),
    "Syn-VQA": ("VQA", "IND", _vqa),
    "Syn-T2I": ("Retrieval", "IND", lambda rng, cfg: _retrieval(rng, cfg, True, (2, 3))),
    "Syn-I2T": ("Retrieval", "IND", lambda rng, cfg: _retrieval(rng, cfg, False, (2, 3))),
    "Syn-Ground": ("Grounding", "IND", _grounding),
    "Syn-T2I-Crowded": ("Retrieval", "OOD", lambda rng, cfg: _retrieval(rng, cfg, True, (4, 5))),
}
"""Task name -> (meta-task, IND/OOD, builder)."""


class _ImageWriter:
    def __init__(self, root: Path, folder: str) -> None:
        self.root, self.folder, self.count = root, folder, 0

    def __call__(self, image: Any) -> str:
        if image is None:
            return ""
        relative = f"images/{self.folder}/{self.count:06d}.png"
        self.count += 1
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format="PNG")
        return relative


def _eval_row(example: _Example, save: _ImageWriter) -> dict[str, Any]:
    return {
        "qry_text": example.query_text,
        "qry_img_path": save(example.query_image),
        "tgt_text": [text for text, _ in example.candidates],
        "tgt_img_path": [save(image) for _, image in example.candidates],
    }


def _train_row(example: _Example, save: _ImageWriter) -> dict[str, Any]:
    (pos_text, pos_image), (neg_text, neg_image) = example.candidates[0], example.candidates[1]
    return {
        "qry": example.query_text,
        "qry_image_path": save(example.query_image),
        "pos_text": pos_text,
        "pos_image_path": save(pos_image),
        "neg_text": neg_text,
        "neg_image_path": save(neg_image),
    }


def write_synthetic_benchmark(
    root: str | Path, config: SyntheticConfig | None = None
) -> dict[str, Path]:
    """Write the evaluation tasks and the training split under ``root``; return their paths.

    Returns
    -------
    dict
        ``{"eval": <root>/eval, "train": <root>/train/train.jsonl}``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from metaembed.evaluation.io import write_json_atomic, write_text_atomic

    config = config or SyntheticConfig()
    root = Path(root)
    eval_dir, train_dir = root / "eval", root / "train"
    metadata = {}
    train_lines = []
    for index, (name, (meta_task, split, build)) in enumerate(SYNTHETIC_TASKS.items()):
        rng = random.Random(config.seed * 1000 + index)
        save = _ImageWriter(eval_dir, name)
        rows = [_eval_row(build(rng, config), save) for _ in range(config.eval_rows)]
        folder = eval_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), folder / "test-00000-of-00001.parquet")
        metadata[name] = {"meta_task": meta_task, "split": split}
        if split == "IND":
            train_rng = random.Random(config.seed * 1000 + 500 + index)
            train_save = _ImageWriter(train_dir, name)
            for _ in range(config.train_examples):
                train_lines.append(json.dumps(_train_row(build(train_rng, config), train_save)))
    random.Random(config.seed).shuffle(train_lines)
    write_json_atomic(eval_dir / "tasks.json", metadata)
    write_text_atomic(train_dir / "train.jsonl", "\n".join(train_lines) + "\n")
    return {"eval": eval_dir, "train": train_dir / "train.jsonl"}
