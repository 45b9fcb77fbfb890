"""Items: normalisation of str / Path / PIL / Item, image loading and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from metaembed.items import Item, as_item, as_items, load_image, load_item_images


def test_as_item_kinds(tmp_path):
    picture = Image.new("RGB", (4, 4))
    assert as_item("text") == Item(text="text")
    assert as_item(Path("a.png")).image == Path("a.png")
    assert as_item(picture).image is picture
    item = Item(text="t", instruction="i")
    assert as_item(item) is item


def test_as_items_rejects_single_item_and_bad_types():
    with pytest.raises(TypeError, match="list of items"):
        as_items("just one string")
    with pytest.raises(TypeError, match=r"item 2\)"):
        as_items(["a", "b", 7])
    with pytest.raises(ValueError, match="item 1 has neither text nor an image"):
        as_items(["a", Item(text="   ")])
    with pytest.raises(TypeError, match="Item.text must be a str"):
        Item(text=3)


def test_load_image_modes_and_huge_images(tmp_path):
    path = tmp_path / "gray.png"
    Image.new("L", (3000, 1000), 128).save(path)
    loaded = load_image(path, max_side=1024)
    assert loaded.mode == "RGB" and loaded.size == (1024, 341)
    rgba = Image.new("RGBA", (8, 8))
    assert load_image(rgba).mode == "RGB"


def test_load_errors_name_the_item(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(FileNotFoundError, match="item 7: image file .*nope.png.* does not exist"):
        load_item_images([Item(image=tmp_path / "nope.png")], indices=[7])
    with pytest.raises(ValueError, match="item 0: cannot read image file .*broken.png"):
        load_item_images([Item(image=broken)])


def test_transparent_images_are_composited_on_white(tmp_path):
    from PIL import Image

    from metaembed.items import load_image

    drawing = Image.new("RGBA", (4, 4), (0, 0, 0, 0))  # fully transparent...
    drawing.putpixel((1, 1), (0, 0, 0, 255))  # ...with one black pixel
    path = tmp_path / "clipart.png"
    drawing.save(path)
    for source in (drawing, path, drawing.convert("LA")):
        rgb = load_image(source)
        assert rgb.mode == "RGB"
        assert rgb.getpixel((0, 0)) == (255, 255, 255)  # background, not black
        assert rgb.getpixel((1, 1)) == (0, 0, 0)
    palette = drawing.convert("P")
    palette.info["transparency"] = palette.getpixel((0, 0))
    assert load_image(palette).getpixel((0, 0)) == (255, 255, 255)
