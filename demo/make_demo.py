"""Rebuild the demo dataset (demo/images/ and demo/demo.jsonl) from scikit-image's sample data.

    python demo/make_demo.py        # from the repo root; needs scikit-image (pip install -e .[test])

The output is committed; this script documents exactly how it was made.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import skimage
from PIL import Image

SRC = Path(skimage.__file__).parent / "data"
HERE = Path(__file__).resolve().parent
IMAGES = HERE / "images"

IMG = "<__dj__image>\n"
EOC = " <|__dj__eoc|>"


def make_images() -> None:
    IMAGES.mkdir(exist_ok=True)
    # PNGs re-encoded as JPEG (quality 90) to keep the repo small
    for name in ["astronaut", "brick", "camera", "cell", "chelsea", "clock_motion", "coffee",
                 "coins", "color", "grass", "gravel", "ihc", "moon", "motorcycle_left",
                 "motorcycle_right"]:  # fmt: skip
        im = Image.open(SRC / f"{name}.png")
        if im.mode not in ("L", "RGB"):
            im = im.convert("RGB")
        im.save(IMAGES / f"{name}.jpg", quality=90)
    # copied as they are (small PNGs, and skimage's own JPEGs)
    for f in ["horse.png", "page.png", "text.png", "hubble_deep_field.jpg", "retina.jpg",
              "rocket.jpg"]:  # fmt: skip
        shutil.copyfile(SRC / f, IMAGES / f)
    chelsea = Image.open(SRC / "chelsea.png").convert("RGB")
    # near-duplicate: the same cat at half size, re-encoded at a lower quality
    chelsea.resize((225, 150), Image.LANCZOS).save(IMAGES / "chelsea_small.jpg", quality=70)
    # too small: a 40x30 thumbnail of the coffee cup
    coffee = Image.open(SRC / "coffee.png").convert("RGB")
    coffee.resize((40, 30), Image.LANCZOS).save(IMAGES / "coffee_tiny_40x30.jpg", quality=90)
    # extreme aspect ratio: a 512x40 strip of the brick wall, scaled to 1024x80 (12.8:1)
    brick = Image.open(SRC / "brick.png").crop((0, 0, 512, 40)).resize((1024, 80))
    brick.save(IMAGES / "brick_strip_1024x80.jpg", quality=90)
    # broken: the first 40% of a JPEG (its header is intact, its pixels are not)
    data = (SRC / "rocket.jpg").read_bytes()
    (IMAGES / "broken_truncated.jpg").write_bytes(data[: len(data) * 2 // 5])
    # broken: a text file with a .jpg name
    (IMAGES / "not_an_image.jpg").write_text("This is a plain text file, not a JPEG.\n")


def s(id_: str, caption: str, *images: str) -> str:
    """One Data-Juicer sample line: an image token per image, the caption, the end-of-chunk token."""
    row: dict = {"id": id_, "text": IMG * len(images) + caption + EOC}
    if images:
        row["images"] = [f"images/{name}" for name in images]
    return json.dumps(row, ensure_ascii=False)


def make_jsonl() -> None:
    lines = [
        s(
            "astronaut",
            "Astronaut Eileen Collins in an orange spacesuit smiles in front of an "
            "American flag and a space shuttle model, her helmet beside her.",
            "astronaut.jpg",
        ),
        s(
            "coffee",
            "A cup of espresso with crema on a red saucer with a small spoon, on a wooden table.",
            "coffee.jpg",
        ),
        s(
            "chelsea",
            "Close-up of a ginger tabby cat with yellow-green eyes and long white whiskers.",
            "chelsea.jpg",
        ),
        # a Unicode ellipsis for punctuation_normalization_mapper
        s(
            "rocket",
            "A Falcon 9 rocket stands on its launch pad at dusk between lightning "
            "towers, lit by floodlights\u2026",
            "rocket.jpg",
        ),
        # mojibake (UTF-8 read as cp1252) for fix_unicode_mapper: "cameraâ€™s" -> "camera's"
        s(
            "camera",
            "Black-and-white photo of a man in a dark coat looking into a film "
            "camera\u00e2\u20ac\u2122s viewfinder; the camera stands on a tripod in a grassy "
            "field.",
            "camera.jpg",
        ),
        s(
            "coins",
            "Twenty-four ancient Greek coins from Pompeii laid out in four rows on a "
            "dark background, in grayscale.",
            "coins.jpg",
        ),
        # whitespace oddities (tab, no-break and thin spaces) for whitespace_normalization_mapper
        s(
            "moon",
            "Grayscale\tview of the surface of the\u00a0moon with small craters and "
            "low\u2009contrast.",
            "moon.jpg",
        ),
        s(
            "page",
            'A scanned book page headed "Region-based segmentation" with printed '
            "text and a line of Python code.",
            "page.png",
        ),
        s(
            "text",
            "Handwritten mathematical symbols and equations on a sheet of paper, "
            "photographed at an angle.",
            "text.png",
        ),
        s(
            "horse",
            "A black silhouette of a horse standing in profile, facing right, on a "
            "transparent background.",
            "horse.png",
        ),
        s("broken-json", "placeholder"),  # replaced below by a malformed line
        s(
            "hubble",
            "The Hubble eXtreme Deep Field: thousands of small galaxies of many colors "
            "against the black of space.",
            "hubble_deep_field.jpg",
        ),
        s(
            "retina",
            "A fundus photograph of a healthy human retina, orange-red, with branching "
            "blood vessels and the bright optic disc on the left.",
            "retina.jpg",
        ),
        s(
            "ihc",
            "Microscopy of colonic glands with brown immunohistochemical staining and "
            "blue hematoxylin counterstain.",
            "ihc.jpg",
        ),
        s(
            "brick",
            "A grayscale brick wall seen at an angle, with long rectangular bricks and "
            "light mortar lines.",
            "brick.jpg",
        ),
        s(
            "grass",
            "Grayscale close-up texture of dense grass blades and a few fallen leaves.",
            "grass.jpg",
        ),
        s(
            "gravel",
            "Grayscale texture of small angular gravel stones packed together.",
            "gravel.jpg",
        ),
        s(
            "missing-image",
            "A photo of a lighthouse on a rocky coast at sunset.",
            "lighthouse_missing.jpg",
        ),
        s(
            "cell",
            "A quantitative phase image of a single round cell floating in saline, "
            "bright against a banded gray background.",
            "cell.jpg",
        ),
        s(
            "clock",
            "A wall clock photographed while the camera moved sideways, blurred into "
            "a soft gray smear.",
            "clock_motion.jpg",
        ),
        s(
            "color",
            "A color wheel: hues around the rim fading to white at the center, on a "
            "black background.",
            "color.jpg",
        ),
        # the link is removed by clean_links_mapper
        s(
            "motorcycle-left",
            "A red motorcycle parked in a garage in front of shelves of boxes, "
            "from the Middlebury 2014 stereo dataset https://vision.middlebury.edu/stereo/data/",
            "motorcycle_left.jpg",
        ),
        # the other view of the stereo pair: a near-duplicate that an exact pHash match keeps
        s(
            "motorcycle-right",
            "The same red motorcycle in the garage, seen by a second camera about "
            "20 centimetres to the right.",
            "motorcycle_right.jpg",
        ),
        s(
            "truncated-jpeg",
            "A rocket on a launch pad at night, but the image file is cut short.",
            "broken_truncated.jpg",
        ),
        # duplicates
        s(
            "coffee-repeat",
            "A cup of espresso with crema on a red saucer with a small spoon, on a wooden table.",
            "coffee.jpg",
        ),
        s(
            "astronaut-lowercase",
            "astronaut eileen collins in an orange spacesuit smiles in "
            "front of an american flag and a space shuttle model -- her helmet beside her",
            "astronaut.jpg",
        ),
        s(
            "chelsea-small",
            "A smaller, lower-quality copy of the close-up photo of the ginger tabby cat.",
            "chelsea_small.jpg",
        ),
        s(
            "not-an-image",
            "A file that claims to be a JPEG but holds plain text.",
            "not_an_image.jpg",
        ),
        # samples a filter should drop
        s("short-caption", "Coins.", "coins.jpg"),
        s(
            "repetitive",
            "The moon moon moon moon moon moon moon moon moon moon moon moon moon "
            "moon moon moon moon.",
            "moon.jpg",
        ),
        s(
            "coffee-french",
            "Une tasse d'espresso sur une soucoupe rouge avec une petite "
            "cuill\u00e8re, pos\u00e9e sur une table en bois.",
            "coffee.jpg",
        ),
        s("few-words", "Stones, stones, stones!!!", "gravel.jpg"),
        s(
            "tiny-image",
            "A tiny thumbnail of an espresso cup on a red saucer, only 40 by 30 pixels.",
            "coffee_tiny_40x30.jpg",
        ),
        s(
            "brick-strip",
            "A long thin strip cut from the top edge of a brick wall photograph, "
            "far wider than tall.",
            "brick_strip_1024x80.jpg",
        ),
        '{"id": "text-not-string", "text": 42, "images": ["images/moon.jpg"]}',
        # a text-only sample: no image token, no images; image filters keep it
        s(
            "text-only",
            "A text-only sample with no image: image filters have nothing to judge and keep it.",
        ),
    ]
    # a malformed JSON line (the closing brace is missing)
    i = next(k for k, line in enumerate(lines) if '"broken-json"' in line)
    lines[i] = (
        '{"id": "broken-json", "text": "<__dj__image>\\nA motion-blurred clock. '
        '<|__dj__eoc|>", "images": ["images/clock_motion.jpg"]'
    )
    (HERE / "demo.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    make_images()
    make_jsonl()
