"""Images with known text, for measuring OCR (tests/test_ocr_ops.py, bench/ocr_quality.py).

`render_samples(n, seed)` draws 1-3 lines of 1-3 common English words (or numbers) per
image with PIL fonts (DejaVu where installed, Pillow's bundled font always) at several
sizes, colours and backgrounds (flat, gradient, a photo from scikit-image), slightly
rotated. `score_ocr` compares what an OCR engine read with the words drawn.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path

WORDS = """open hours coffee bread fresh market street hotel bank police taxi stop exit sale
school garden river north south east west city park station museum library bakery pizza
music center welcome family house water green yellow orange purple silver golden bridge
tower beach island mountain winter summer spring autumn morning evening dinner lunch
ticket office kitchen window doctor pharmacy airport parking public private danger
warning closed special menu price today store fruit flower little great happy world
""".split()
NUMBERS = ["24", "2024", "15", "100", "7", "42", "365", "911"]
_TOKEN = re.compile(r"[a-z0-9]+")


@dataclass
class Sample:
    image: object  # PIL.Image.Image, RGB
    words: list[str]  # the words drawn, in reading order


def fonts(sizes: tuple[int, ...] = (18, 24, 32, 44)) -> list[object]:
    """Truetype fonts at `sizes`: the DejaVu faces found on the system, and Pillow's own."""
    from PIL import ImageFont

    faces = sorted(glob.glob("/usr/share/fonts/truetype/dejavu/DejaVu*.ttf"))
    faces = [f for f in faces if re.search(r"DejaVu(Sans|Serif|SansMono)(-Bold)?\.ttf$", f)]
    out = []
    for size in sizes:
        out.extend(ImageFont.truetype(face, size) for face in faces)
        out.append(ImageFont.load_default(size=size))
    return out


def photo_backgrounds() -> list[object]:
    """Photos without text from scikit-image (its bundled data)."""
    import skimage.data
    from PIL import Image

    return [Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
            for name in ("coffee", "chelsea", "astronaut", "rocket")]  # fmt: skip


def render_samples(n: int, seed: int = 0, size: tuple[int, int] = (480, 320)) -> list[Sample]:
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    font_list, photos = fonts(), photo_backgrounds()
    samples = []
    for _ in range(n):
        width, height = size
        kind = rng.integers(3)
        if kind == 0:
            bg = Image.new("RGB", size, tuple(int(c) for c in rng.integers(0, 256, 3)))
        elif kind == 1:
            a, b = rng.integers(0, 256, (2, 3))
            ramp = np.linspace(0, 1, width)[None, :, None]
            arr = (a * (1 - ramp) + b * ramp).repeat(height, axis=0)
            bg = Image.fromarray(arr.astype(np.uint8))
        else:
            bg = photos[rng.integers(len(photos))].resize(size)
        layer = Image.new("RGBA", size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        words: list[str] = []
        y = int(rng.integers(10, 30))
        for _line in range(int(rng.integers(1, 4))):
            font = font_list[rng.integers(len(font_list))]
            count = int(rng.integers(1, 4))
            line = [NUMBERS[rng.integers(len(NUMBERS))] if rng.random() < 0.15
                    else WORDS[rng.integers(len(WORDS))] for _ in range(count)]  # fmt: skip
            line = [w.upper() if rng.random() < 0.3 else w for w in line]
            text = " ".join(line)
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            if y + bottom - top > height - 10 or right - left > width - 20:
                break
            x = int(rng.integers(10, max(11, width - (right - left) - 10)))
            patch = bg.crop((x, y, x + right - left, y + bottom - top)).convert("L")
            light = np.asarray(patch).mean() > 128
            shade = rng.integers(0, 70, 3)
            colour = tuple(int(c) for c in (shade if light else 255 - shade)) + (255,)
            draw.text((x - left, y - top), text, font=font, fill=colour)
            words.extend(line)
            y += (bottom - top) + int(rng.integers(12, 30))
        angle = float(rng.uniform(-5, 5))
        layer = layer.rotate(angle, resample=Image.BICUBIC, center=(width / 2, height / 2))
        image = Image.alpha_composite(bg.convert("RGBA"), layer).convert("RGB")
        samples.append(Sample(image, words))
    return samples


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _concatenation(token: str, vocabulary: set[str]) -> bool:
    """True if `token` is one or more words of `vocabulary` written without spaces."""
    ok = [True] + [False] * len(token)
    for end in range(1, len(token) + 1):
        ok[end] = any(ok[start] and token[start:end] in vocabulary for start in range(end))
    return ok[-1]


@dataclass
class OcrScore:
    words: int = 0  # words drawn
    read: int = 0  # tokens the OCR returned
    recalled_exact: int = 0  # drawn words read as a separate token
    recalled: int = 0  # drawn words found in the text read, spaces ignored
    correct_exact: int = 0  # tokens that are a drawn word
    correct: int = 0  # tokens that are drawn words, spaces ignored (dropped spaces forgiven)

    def add(self, drawn: list[str], read_text: str) -> None:
        truth = [t for w in drawn for t in _tokens(w)]
        got = _tokens(read_text)
        joined = "".join(got)
        vocabulary = set(truth)
        self.words += len(truth)
        self.read += len(got)
        self.recalled_exact += sum(1 for w in truth if w in got)
        self.recalled += sum(1 for w in truth if w in joined)
        self.correct_exact += sum(1 for t in got if t in vocabulary)
        self.correct += sum(1 for t in got if _concatenation(t, vocabulary))

    def figures(self) -> dict[str, float]:
        def ratio(a: int, b: int) -> float:
            return round(a / b, 4) if b else 1.0

        return {
            "recall": ratio(self.recalled, self.words),
            "precision": ratio(self.correct, self.read),
            "recall_exact_words": ratio(self.recalled_exact, self.words),
            "precision_exact_words": ratio(self.correct_exact, self.read),
        }


def save_samples(samples: list[Sample], folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, sample in enumerate(samples):
        path = folder / f"text_{i:03d}.png"
        sample.image.save(path)
        paths.append(str(path))
    return paths
