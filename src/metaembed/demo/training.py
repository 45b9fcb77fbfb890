"""The demo model's provenance and its baseline fit.

The demo model is trained by the general trainer like any other model::

    metaembed train configs/demo-openclipart.yaml

(``train_data: [{source: openclipart, ...}]``, single-task batches with
distinct positives, the projector's ridge warm start; see ``docs/demo.md``).
The trainer saves its config next to the exported model
(``training_config.json``); this module reads the openclipart source back
from it, so the demo rebuilds exactly the split the model was trained on,
and fits the single-vector baseline's linear map on the same train images.
"""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from typing import Any

__all__ = ["clipart_source", "split_settings", "fit_demo_baseline"]

logger = logging.getLogger(__name__)

SPLIT_KEYS = ("heldout_size", "split_seed", "max_title_share")
"""The source settings that fix the train / held-out split."""


def clipart_source(model_dir: str | Path) -> dict[str, Any]:
    """Return the ``{source: openclipart, ...}`` entry the model in ``model_dir`` was trained on.

    Missing keys are filled with the defaults of
    :func:`metaembed.data.clipart_training.training_examples`.
    """
    from metaembed.data.clipart_training import training_examples
    from metaembed.training.arguments import TRAINING_CONFIG_FILENAME

    path = Path(model_dir) / TRAINING_CONFIG_FILENAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {model_dir} is not a model trained by metaembed train; "
            "train the demo model with: metaembed train configs/demo-openclipart.yaml"
        )
    saved = json.loads(path.read_text(encoding="utf-8"))
    sources = [
        spec
        for spec in saved.get("train_data", [])
        if isinstance(spec, dict) and spec.get("source") == "openclipart"
    ]
    if not sources:
        raise ValueError(
            f"{path}: the model was not trained on the openclipart source "
            "(train_data has no {source: openclipart} entry), so the demo cannot rebuild its split"
        )
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(training_examples).parameters.items()
    }
    return {**defaults, **{k: v for k, v in sources[0].items() if k != "source"}}


def split_settings(model_dir: str | Path) -> dict[str, Any]:
    """Return the split settings (``heldout_size``, ``split_seed``, ``max_title_share``)."""
    source = clipart_source(model_dir)
    return {key: source[key] for key in SPLIT_KEYS}


def fit_demo_baseline(
    model_dir: str | Path,
    openclipart_root: str | None = None,
    data_cache: str | None = None,
    show_progress: bool = False,
) -> Path:
    """Fit the baseline's linear image map on the model's train images; save it next to the model.

    Uses every (image, text) pair of the train source (titles, keywords,
    descriptions, category names), MiniLM text vectors and the frozen
    encoder's grid-mean features.
    """
    from metaembed.data.clipart_training import training_examples
    from metaembed.demo.baselines import MiniLMEncoder, fit_linear_map, save_linear_map
    from metaembed.model.modeling import MetaEmbedModel

    source = clipart_source(model_dir)
    if openclipart_root is not None:
        source["root"] = openclipart_root
    if data_cache is not None:
        source["cache"] = data_cache
    pairs = [
        (pair.positive.image, pair.query.text)
        if pair.positive.image is not None
        else (pair.query.image, pair.positive.text)
        for pair in training_examples(**source)
    ]
    model = MetaEmbedModel.from_pretrained(model_dir)
    paths = list(dict.fromkeys(path for path, _ in pairs))
    grids = model.adapter.frozen_image_features(paths, show_progress=show_progress)  # (N, G, C)
    features = grids.mean(dim=1)  # (N_images, C)
    row_of = {path: row for row, path in enumerate(paths)}
    texts = list(dict.fromkeys(text for _, text in pairs))
    distinct = MiniLMEncoder().encode(texts, show_progress=show_progress)  # (N_texts, 384)
    text_row = {text: row for row, text in enumerate(texts)}
    text_vectors = distinct[[text_row[text] for _, text in pairs]]  # (N_pairs, 384)
    pair_features = features[[row_of[path] for path, _ in pairs]]  # (N_pairs, C)
    image_map = fit_linear_map(pair_features, text_vectors, seed=0)
    path = save_linear_map(image_map, model_dir)
    logger.info("baseline linear map fitted on %d pairs -> %s", len(pairs), path)
    return path
