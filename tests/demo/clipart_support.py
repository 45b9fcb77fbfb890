"""Helpers of the demo tests: a small synthetic openclipart tree (transparent PNGs + SVG twins).

A uniquely named module (not ``conftest``): test folders share one ``sys.path`` namespace.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

SVG = """<?xml version="1.0"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/"
     xmlns:cc="http://web.resource.org/cc/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<metadata><rdf:RDF><cc:Work rdf:about="">
<dc:title>{title}</dc:title><dc:description>{description}</dc:description>
<dc:subject><rdf:Bag>{keywords}</rdf:Bag></dc:subject>
<dc:creator><cc:Agent><dc:title>Some Artist</dc:title></cc:Agent></dc:creator>
</cc:Work></rdf:RDF></metadata><path d="M0,0"/></svg>
"""

DRAWINGS = [  # (relative path, title, keywords, description)
    ("food/fruit/apple_01", "Red Apple", ["fruit", "apple", "food"], "A shiny red apple"),
    ("food/pear_02", "Pear &amp; leaf", ["pear"], ""),
    ("animals/birds/crow_01", "Crow", ["bird", "animals", "black"], "A black crow"),
    ("animals/cat_01", "Cat 1", ["cat"], ""),
    ("animals/cat_02", "cat_2", ["cat"], ""),
    ("unsorted/thing", "Thing", ["unsorted", "thing"], ""),
    ("unsorted/duplicates/apple_01", "Red Apple", ["fruit"], ""),
    ("shapes/star", "Star", [], ""),
] + [(f"computer/icons/icon_{i}", "Lemon SVG theme", ["icon"], "") for i in range(7)]


def write_clipart_tree(root: Path) -> Path:
    """Write the PNG + SVG twins of ``DRAWINGS`` under ``root`` (like /usr/share/openclipart)."""
    for index, (relative, title, keywords, description) in enumerate(DRAWINGS):
        png = root / "png" / f"{relative}.png"
        svg = root / "svg" / f"{relative}.svg"
        png.parent.mkdir(parents=True, exist_ok=True)
        svg.parent.mkdir(parents=True, exist_ok=True)
        picture = Image.new("RGBA", (12, 6), (0, 0, 0, 0))  # transparent background
        picture.putpixel((index % 12, 3), (200, 10, 10, 255))
        picture.save(png)
        items = "".join(f"<rdf:li>{keyword}</rdf:li>" for keyword in keywords)
        svg.write_text(
            SVG.format(title=title, description=description, keywords=items), encoding="utf-8"
        )
    return root
