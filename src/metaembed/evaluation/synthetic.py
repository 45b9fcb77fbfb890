"""Procedural scenes for a controlled benchmark: objects with shape, colour, size and position.

A :class:`Scene` places a few objects on a 3 x 3 grid (at most one per cell,
each ``(colour, shape)`` pair at most once, so every object can be named
uniquely). Scenes render to small RGB images with PIL and describe themselves
in words: captions, attribute answers and referring expressions. Telling two
scenes apart often needs one detail (one object's colour, shape, size or
cell), which is what a single pooled vector tends to lose.

Everything is driven by a ``random.Random`` so a seed fixes the data.

>>> import random
>>> scene = Scene((SceneObject("circle", "red", "large", 0),
...                SceneObject("square", "blue", "small", 4)))
>>> caption(scene)
'a large red circle at the top left and a small blue square in the center'
>>> referring_expression(scene.objects[1])
'the small blue square'
>>> render(scene, 56).size
(56, 56)
>>> perturb(scene, random.Random(0)) != scene
True
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SHAPES",
    "COLOURS",
    "SIZES",
    "POSITIONS",
    "SceneObject",
    "Scene",
    "random_scene",
    "render",
    "crop_object",
    "describe",
    "caption",
    "referring_expression",
    "perturb",
]

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 190),
    "orange": (245, 140, 30),
}
SIZES: dict[str, float] = {"small": 0.16, "large": 0.30}
"""Object radius as a fraction of the image side."""
POSITIONS = (
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)
"""Names of the 3 x 3 grid cells, row by row."""

_BACKGROUND = (30, 30, 34)


@dataclass(frozen=True)
class SceneObject:
    """One object: a shape of a colour and size in a grid cell (index into ``POSITIONS``)."""

    shape: str
    colour: str
    size: str
    cell: int

    def __post_init__(self) -> None:
        if self.shape not in SHAPES or self.colour not in COLOURS or self.size not in SIZES:
            raise ValueError(f"unknown attribute in {self}; use SHAPES, COLOURS and SIZES")
        if not 0 <= self.cell < len(POSITIONS):
            raise ValueError(f"cell must be in [0, 8], got {self.cell}")

    @property
    def position(self) -> str:
        """Name of the object's grid cell."""
        return POSITIONS[self.cell]


@dataclass(frozen=True)
class Scene:
    """A few objects in distinct cells, each (colour, shape) pair at most once."""

    objects: tuple[SceneObject, ...]

    def __post_init__(self) -> None:
        cells = [obj.cell for obj in self.objects]
        pairs = [(obj.colour, obj.shape) for obj in self.objects]
        if not self.objects or len(set(cells)) != len(cells) or len(set(pairs)) != len(pairs):
            raise ValueError(
                "a scene needs >= 1 object, distinct cells and distinct (colour, shape) pairs"
            )


def random_scene(rng: random.Random, num_objects: int = 2) -> Scene:
    """Return a random scene of ``num_objects`` objects (1 to 9)."""
    if not 1 <= num_objects <= len(POSITIONS):
        raise ValueError(f"num_objects must be in [1, 9], got {num_objects}")
    cells = rng.sample(range(len(POSITIONS)), num_objects)
    pairs = rng.sample([(c, s) for c in COLOURS for s in SHAPES], num_objects)
    objects = tuple(
        SceneObject(shape, colour, rng.choice(tuple(SIZES)), cell)
        for cell, (colour, shape) in sorted(zip(cells, pairs, strict=True))
    )
    return Scene(objects)


def _polygon(shape: str, cx: float, cy: float, radius: float) -> list[tuple[float, float]]:
    if shape == "square":
        return [
            (cx - radius, cy - radius),
            (cx + radius, cy - radius),
            (cx + radius, cy + radius),
            (cx - radius, cy + radius),
        ]
    if shape == "triangle":
        return [(cx, cy - radius), (cx + radius, cy + radius), (cx - radius, cy + radius)]
    return [(cx, cy - radius), (cx + radius, cy), (cx, cy + radius), (cx - radius, cy)]  # diamond


def render(scene: Scene, size: int = 56, supersample: int = 4) -> Any:
    """Draw the scene as an RGB PIL image of ``size`` x ``size`` pixels (anti-aliased)."""
    from PIL import Image, ImageDraw

    big = size * supersample
    image = Image.new("RGB", (big, big), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    cell = big / 3
    for obj in scene.objects:
        row, col = divmod(obj.cell, 3)
        cx, cy = (col + 0.5) * cell, (row + 0.5) * cell
        radius = SIZES[obj.size] * big / 2
        colour = COLOURS[obj.colour]
        if obj.shape == "circle":
            draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)
        else:
            draw.polygon(_polygon(obj.shape, cx, cy, radius), fill=colour)
    return image.resize((size, size), Image.Resampling.LANCZOS)


def crop_object(image: Any, obj: SceneObject, size: int = 28) -> Any:
    """Cut the grid cell holding ``obj``, cut from a rendered scene and resized to ``size``."""
    from PIL import Image

    side = image.size[0] / 3
    row, col = divmod(obj.cell, 3)
    box = (round(col * side), round(row * side), round((col + 1) * side), round((row + 1) * side))
    return image.crop(box).resize((size, size), Image.Resampling.LANCZOS)


def describe(obj: SceneObject, with_position: bool = True) -> str:
    """Describe one object: ``'a small blue square in the center'`` (position optional)."""
    text = f"a {obj.size} {obj.colour} {obj.shape}"
    if not with_position:
        return text
    where = "in the center" if obj.position == "center" else f"at the {obj.position}"
    return f"{text} {where}"


def caption(scene: Scene) -> str:
    """Describe all objects, in cell order, joined with commas and ``and``."""
    parts = [describe(obj) for obj in scene.objects]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def referring_expression(obj: SceneObject) -> str:
    """Name an object: ``'the small blue square'`` (unique in its scene by construction)."""
    return f"the {obj.size} {obj.colour} {obj.shape}"


def perturb(scene: Scene, rng: random.Random) -> Scene:
    """Return a hard negative: the same scene with one attribute of one object changed.

    Colour or shape changes keep (colour, shape) pairs distinct; a position
    change moves the object to a free cell. Retries until the result is valid.
    """
    for _ in range(100):
        index = rng.randrange(len(scene.objects))
        obj = scene.objects[index]
        kind = rng.choice(("colour", "shape", "size", "cell"))
        if kind == "colour":
            changed = dataclasses.replace(
                obj, colour=rng.choice([c for c in COLOURS if c != obj.colour])
            )
        elif kind == "shape":
            changed = dataclasses.replace(
                obj, shape=rng.choice([s for s in SHAPES if s != obj.shape])
            )
        elif kind == "size":
            changed = dataclasses.replace(obj, size="small" if obj.size == "large" else "large")
        else:
            free = [c for c in range(len(POSITIONS)) if c not in {o.cell for o in scene.objects}]
            if not free:
                continue
            changed = dataclasses.replace(obj, cell=rng.choice(free))
        objects = list(scene.objects)
        objects[index] = changed
        try:
            return Scene(tuple(sorted(objects, key=lambda o: o.cell)))
        except ValueError:
            continue
    raise ValueError("could not perturb the scene; it has too few free cells or attributes")
