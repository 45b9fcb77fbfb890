"""Encoding throughput with meta tokens vs a bare forward of the same inputs (overhead in %).

For each model and role, the same prepared batches run through (a) the bare
backbone on the prompt alone and (b) the MetaEmbed forward with R_q = 16 query
or R_c = 64 candidate meta tokens appended (plus pooling, normalisation).
Both are timed alternately, batch by batch, in one process, best of
``--repeats`` per batch; the extra sequence length (``+tokens``) is printed
for comparison, as the overhead mostly follows it. Processing
(tokenisation, image resizing) is excluded because it is identical for both.
Prints a table and writes ``bench/results/encoding.json``.

    OMP_NUM_THREADS=1 python bench/encoding.py [--models tiny-llama tiny-qwen2-vl smollm2]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path

import torch

from metaembed.items import Item

RESULTS = Path(__file__).parent / "results"
WORDS = (
    "image document chart table figure report revenue growth energy city river mountain dog cat "
    "bicycle market price model retrieval query answer question paper method token vector budget "
    "train test score search index memory latency red blue green large small old new quick slow"
).split()


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def make_items(kind: str, role: str, count: int, seed: int = 0) -> list[Item]:
    """Queries: ~12-word questions. Candidates: ~80-word passages, or a 224 px image + caption."""
    rng = random.Random(seed)
    if role == "query":
        return [Item(text=_sentence(rng, rng.randint(8, 16))) for _ in range(count)]
    if kind == "image":
        from PIL import Image

        return [
            Item(
                text=_sentence(rng, 6),
                image=Image.new("RGB", (224, 224), (rng.randrange(256), 90, 40)),
            )
            for _ in range(count)
        ]
    return [Item(text=_sentence(rng, rng.randint(60, 100))) for _ in range(count)]


def build_model(name: str):
    """Return (model, item kind) for a benchmark model name."""
    from metaembed.testing import tiny_model

    if name == "tiny-llama":
        return tiny_model("llama"), "text"
    if name == "tiny-qwen2-vl":
        return tiny_model("qwen2_vl"), "image"
    if name == "smollm2":
        from metaembed.model.modeling import MetaEmbedModel
        from metaembed.testing.smollm2 import smollm2_folder

        return MetaEmbedModel.from_base_model(str(smollm2_folder())).eval(), "text"
    raise ValueError(f"unknown model {name!r}; use tiny-llama, tiny-qwen2-vl or smollm2")


def time_role(model, items: list[Item], role: str, batch_size: int, repeats: int) -> dict:
    """Seconds for the bare forward and the meta-token forward of all batches.

    Each batch is timed ``repeats`` times, bare and meta alternately, and its best
    time is kept: alternating per batch keeps both sides under the same load when
    the machine is shared.
    """
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    meta_inputs = [model.prepare(batch, role) for batch in batches]
    bare_inputs = [model.adapter.build_inputs(batch, role) for batch in batches]
    runs = {
        "bare": lambda i: model.adapter.forward_with_meta(model._to_device(bare_inputs[i]), None),
        "meta": lambda i: model.embed(meta_inputs[i], role),
    }
    total = {"bare": 0.0, "meta": 0.0}
    with torch.inference_mode():
        runs["bare"](0), runs["meta"](0)  # warm-up
        for index in range(len(batches)):
            best = {"bare": float("inf"), "meta": float("inf")}
            for _ in range(repeats):
                for label, run in runs.items():
                    start = time.perf_counter()
                    run(index)
                    best[label] = min(best[label], time.perf_counter() - start)
            for label in total:
                total[label] += best[label]
    prompt_tokens = sum(int(b["attention_mask"].sum()) for b in bare_inputs) / len(items)
    meta_tokens = model.config.num_meta_tokens(role)
    return {
        "role": role,
        "items": len(items),
        "mean_prompt_tokens": round(prompt_tokens, 1),
        "meta_tokens": meta_tokens,
        "extra_tokens_percent": 100.0 * meta_tokens / prompt_tokens,
        "bare_items_per_s": len(items) / total["bare"],
        "meta_items_per_s": len(items) / total["meta"],
        "overhead_percent": 100.0 * (total["meta"] / total["bare"] - 1.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny-llama", "tiny-qwen2-vl", "smollm2"])
    parser.add_argument(
        "--items", type=int, default=32, help="items per role (8 for smollm2 is enough)"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models:
        model, kind = build_model(name)
        for role in ("query", "candidate"):
            items = make_items(kind, role, args.items)
            row = {"model": name, **time_role(model, items, role, args.batch_size, args.repeats)}
            rows.append(row)
        del model
    header = (
        f"{'model':<14} {'role':<9} {'prompt tok':>10} {'meta':>5} {'+tokens':>8} "
        f"{'bare it/s':>10} {'meta it/s':>10} {'overhead':>9}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['model']:<14} {r['role']:<9} {r['mean_prompt_tokens']:>10.1f} "
            f"{r['meta_tokens']:>5} {r['extra_tokens_percent']:>7.1f}% "
            f"{r['bare_items_per_s']:>10.1f} {r['meta_items_per_s']:>10.1f} "
            f"{r['overhead_percent']:>8.1f}%"
        )
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
        "torch": torch.__version__,
        "device": "cpu",
    }
    RESULTS.mkdir(exist_ok=True)
    out = {"machine": machine, "batch_size": args.batch_size, "repeats": args.repeats, "rows": rows}
    (RESULTS / "encoding.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
