"""Synthetic scenes: validity, rendering, hard negatives, the benchmark on disk (MMEB schema)."""

from __future__ import annotations

import json
import random

import pytest

from metaembed.evaluation import synthetic as syn
from metaembed.evaluation.mmeb import load_mmeb
from metaembed.evaluation.synthetic_tasks import (
    SYNTHETIC_TASKS,
    SyntheticConfig,
    write_synthetic_benchmark,
)


def test_random_scenes_are_valid_and_seeded():
    first = [syn.random_scene(random.Random(3), 3) for _ in range(2)]
    assert first[0] == first[1]
    rng = random.Random(0)
    for _ in range(50):
        scene = syn.random_scene(rng, rng.randint(1, 5))
        assert len({o.cell for o in scene.objects}) == len(scene.objects)
    with pytest.raises(ValueError, match="distinct"):
        syn.Scene(
            (
                syn.SceneObject("circle", "red", "small", 0),
                syn.SceneObject("circle", "red", "large", 1),
            )
        )
    with pytest.raises(ValueError, match="num_objects"):
        syn.random_scene(rng, 10)


def test_perturb_changes_exactly_one_attribute():
    rng = random.Random(1)
    for _ in range(100):
        scene = syn.random_scene(rng, 3)
        other = syn.perturb(scene, rng)
        before = {(o.shape, o.colour, o.size, o.cell) for o in scene.objects}
        after = {(o.shape, o.colour, o.size, o.cell) for o in other.objects}
        assert len(before - after) == 1 and len(after - before) == 1
        (old,), (new,) = before - after, after - before
        assert sum(a != b for a, b in zip(old, new, strict=True)) == 1
        assert syn.caption(other) != syn.caption(scene)


def test_render_puts_colours_in_their_cells():
    scene = syn.Scene(
        (
            syn.SceneObject("square", "red", "large", 0),
            syn.SceneObject("circle", "blue", "large", 8),
        )
    )
    image = syn.render(scene, 90)
    assert image.getpixel((15, 15)) == pytest.approx(syn.COLOURS["red"], abs=3)
    assert image.getpixel((75, 75)) == pytest.approx(syn.COLOURS["blue"], abs=3)
    assert image.getpixel((45, 45)) == (30, 30, 34)
    crop = syn.crop_object(image, scene.objects[1], 10)
    assert crop.size == (10, 10) and crop.getpixel((5, 5)) == pytest.approx(
        syn.COLOURS["blue"], abs=3
    )


def test_benchmark_on_disk(tmp_path):
    paths = write_synthetic_benchmark(
        tmp_path, SyntheticConfig(eval_rows=4, train_examples=3, seed=7)
    )
    tasks, _ = load_mmeb(paths["eval"])
    assert {t.name for t in tasks} == set(SYNTHETIC_TASKS)
    by_name = {t.name: t for t in tasks}
    assert {t.meta_task for t in tasks} == {"Classification", "VQA", "Retrieval", "Grounding"}
    assert by_name["Syn-T2I-Crowded"].split == "OOD" and by_name["Syn-T2I"].split == "IND"
    for task in tasks:
        for row in task.rows:
            assert len(set(row.candidates)) >= 2
            if task.name == "Syn-I2T":  # captions: the positive is unique in its list
                assert [c.text for c in row.candidates].count(row.candidates[0].text) == 1
    lines = (paths["train"]).read_text().splitlines()
    assert len(lines) == 3 * 5  # IND tasks only
    example = json.loads(lines[0])
    assert set(example) == {
        "qry",
        "qry_image_path",
        "pos_text",
        "pos_image_path",
        "neg_text",
        "neg_image_path",
    }
    for key in ("qry_image_path", "pos_image_path", "neg_image_path"):
        assert not example[key] or (paths["train"].parent / example[key]).is_file()
    again = write_synthetic_benchmark(
        tmp_path / "b", SyntheticConfig(eval_rows=4, train_examples=3, seed=7)
    )
    assert again["train"].read_text() == paths["train"].read_text()


def test_short_prompts_and_config_checks(tmp_path):
    config = SyntheticConfig(eval_rows=2, train_examples=1, image_size=84, prompt_style="short")
    tasks, _ = load_mmeb(write_synthetic_benchmark(tmp_path, config)["eval"])
    by_name = {t.name: t for t in tasks}
    t2i = by_name["Syn-T2I"].rows[0]
    assert t2i.query.text.startswith("a ") and t2i.candidates[0].text is None
    assert by_name["Syn-Class"].rows[0].query.text == "classify"
    from PIL import Image

    with Image.open(t2i.candidates[0].image) as image:
        assert image.size == (84, 84)
    with pytest.raises(ValueError, match="prompt_style"):
        SyntheticConfig(prompt_style="long")
