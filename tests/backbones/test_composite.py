"""Composite backbone (image encoder -> projector -> causal LM): tiny random parts, no download."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from metaembed.backbones.composite import CompositeAdapter, CompositeSpec, letterbox
from metaembed.backbones.registry import get_adapter_class
from metaembed.items import Item
from metaembed.model.modeling import MetaEmbedModel
from metaembed.testing import tiny_model

RED = Image.new("RGB", (40, 30), (255, 0, 0))
BLUE_STRIPES = Image.new("RGB", (30, 60), (0, 0, 255))
for x in range(0, 30, 4):
    for y in range(60):
        BLUE_STRIPES.putpixel((x, y), (255, 255, 0))


@pytest.fixture(scope="module")
def model():
    return tiny_model(
        "composite", num_query_tokens=2, num_candidate_tokens=4, groups=["1x1", "2x4"]
    )


def test_registered_like_every_family():
    assert get_adapter_class("composite") is CompositeAdapter


def test_spec_round_trip_and_clear_errors():
    spec = CompositeSpec.parse(
        "efficientnet-lite0+smollm2-135m-instruct;layers=6;grid=3;prompt=plain"
    )
    assert (spec.vision, spec.language_model, spec.layers, spec.grid, spec.prompt) == (
        "efficientnet-lite0",
        "smollm2-135m-instruct",
        6,
        3,
        "plain",
    )
    assert CompositeSpec.parse(str(spec)) == spec
    with pytest.raises(ValueError, match="must look like"):
        CompositeSpec.parse("smollm2-135m-instruct")
    with pytest.raises(ValueError, match="bad option"):
        CompositeSpec.parse("a+b;depth=3")
    with pytest.raises(ValueError, match="prompt"):
        CompositeSpec.parse("a+b;prompt=fancy")


def test_image_slots_marked_and_left_padded(model):
    inputs = model.prepare(
        [Item(image=RED), Item(text="a longer text query with words")], "candidate"
    )
    image_mask = inputs["image_mask"]  # (2, seq + 4)
    assert int(image_mask[0].sum()) == model.adapter.spec.grid**2
    assert int(image_mask[1].sum()) == 0
    assert not bool(image_mask[:, -4:].any())  # meta positions are text
    assert bool(inputs["attention_mask"][:, -1].all())  # left padded: last column is real
    assert inputs["pixel_values"].shape == (1, 3, 56, 56)


def test_embeddings_depend_on_the_image(model):
    vectors = model.encode_candidates(
        [Item(image=RED), Item(image=BLUE_STRIPES)], show_progress=False
    )
    assert vectors.shape == (2, 4, 32)
    assert not torch.allclose(vectors[0], vectors[1], atol=1e-4)
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(2, 4), atol=1e-5)


def test_batch_composition_does_not_change_an_embedding(model):
    items = [
        Item(image=RED, text="red", instruction="Find it."),
        Item(text="a much longer text " * 3),
    ]
    together = model.encode_queries(items, show_progress=False, batch_size=2)
    alone = model.encode_queries(items[:1], show_progress=False)
    torch.testing.assert_close(together[:1], alone, atol=1e-5, rtol=1e-4)


def test_frozen_features_are_cached(model):
    composite = model.adapter.composite_model()
    calls = []
    handle = composite.vision.register_forward_hook(lambda *args: calls.append(1))
    try:
        picture = Image.new("RGB", (20, 20), (10, 200, 30))
        model.encode_candidates([Item(image=picture)], show_progress=False)
        model.encode_queries([Item(image=picture, text="again")], show_progress=False)
    finally:
        handle.remove()
    assert len(calls) == 1


def test_lora_reaches_projector_and_language_model_but_not_the_encoder():
    model = tiny_model(
        "composite", num_query_tokens=2, num_candidate_tokens=4, groups=["1x1", "2x4"]
    )
    model.train()
    composite = model.adapter.composite_model()
    assert not composite.vision.training  # batch norm of a frozen CNN must keep its statistics
    embeddings = model.embed(
        model.prepare([Item(image=RED), Item(image=BLUE_STRIPES)], "candidate"), "candidate"
    )
    embeddings.sum().backward()
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert any(
        "projector" in name and "lora_B" in name and p.grad is not None
        for name, p in trainable.items()
    )
    assert any("language_model" in name and p.grad is not None for name, p in trainable.items())
    assert not any("vision" in name for name in trainable)


def test_save_and_reload_give_the_same_vectors(model, tmp_path):
    model.save_pretrained(tmp_path / "saved")
    saved_files = {path.name for path in (tmp_path / "saved" / "base_model").iterdir()}
    assert saved_files == {"composite_config.json"}  # frozen parts are rebuilt from the spec
    reloaded = MetaEmbedModel.from_pretrained(tmp_path / "saved")
    items = [Item(image=RED), Item(text="hello")]
    torch.testing.assert_close(
        reloaded.encode_candidates(items, show_progress=False),
        model.encode_candidates(items, show_progress=False),
    )


def test_letterbox_keeps_aspect_on_white():
    pixels = letterbox(Image.new("RGB", (20, 10), (0, 0, 0)), 8)  # (3, 8, 8)
    assert pixels.shape == (3, 8, 8)
    assert torch.all(pixels[:, 0, :] == 1.0)  # padding rows are white
    assert torch.all(pixels[:, 4, :] == 0.0)  # the image fills the middle rows


def test_fitted_projector_is_saved_and_reloaded(tmp_path):
    from metaembed.backbones.composite import fit_projector

    model = tiny_model(
        "composite",
        projector="linear",
        num_query_tokens=2,
        num_candidate_tokens=4,
        groups=["1x1", "2x4"],
    )
    composite = model.adapter.composite_model()
    pixels = torch.rand(3, 3, 56, 56)
    features = composite.image_features(pixels)  # (3, 4, 16)
    before = composite.image_tokens(pixels)
    fit_projector(composite, features, [[5, 6], [7], [8, 9, 10]])
    assert not torch.allclose(before, composite.image_tokens(pixels))
    model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "base_model" / "projector.safetensors").is_file()
    reloaded = MetaEmbedModel.from_pretrained(tmp_path / "saved")
    items = [Item(image=RED), Item(text="hello")]
    torch.testing.assert_close(
        reloaded.encode_candidates(items, show_progress=False),
        model.encode_candidates(items, show_progress=False),
    )
    with pytest.raises(ValueError, match="projector=linear"):
        fit_projector(tiny_model("composite").adapter.composite_model(), features, [[1]] * 3)


def test_warm_start_fits_the_projector_from_training_pairs_and_saves_it(tmp_path):
    from metaembed.training.data import TrainingExample

    model = MetaEmbedModel.from_base_model(
        "tiny-cnn+tiny-llama;grid=2;projector=linear",
        family="composite",
        num_query_tokens=2,
        num_candidate_tokens=4,
        groups=["1x1", "2x4"],
        lora_r=4,
        lora_alpha=4,
    )
    RED.save(tmp_path / "red.png")
    examples = [
        TrainingExample(Item(text="a red card"), Item(image=str(tmp_path / "red.png"))),
        TrainingExample(Item(image=str(tmp_path / "red.png")), Item(text="red")),
        TrainingExample(Item(image=BLUE_STRIPES), Item(text="blue stripes")),
        TrainingExample(Item(text="text only"), Item(text="no image")),
    ]
    items = [Item(image=RED), Item(image=BLUE_STRIPES)]
    before = model.encode_candidates(items, show_progress=False)
    assert not model.adapter.base_weights_changed
    model.adapter.warm_start(examples)
    assert model.adapter.base_weights_changed
    after = model.encode_candidates(items, show_progress=False)
    assert not torch.allclose(before, after)
    model.save_pretrained(tmp_path / "saved")  # base_model is a spec string: saved anyway
    assert (tmp_path / "saved" / "base_model" / "projector.safetensors").is_file()
    reloaded = MetaEmbedModel.from_pretrained(tmp_path / "saved")
    torch.testing.assert_close(reloaded.encode_candidates(items, show_progress=False), after)
    with pytest.raises(ValueError, match="no image|none"):
        model.adapter.warm_start(examples[-1:])


def test_families_without_a_projector_refuse_a_warm_start():
    with pytest.raises(ValueError, match="nothing to warm-start"):
        tiny_model("llama").adapter.warm_start([])
