"""A deliberately hostile Data-Juicer-format corpus, and what must become of each line."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

from PIL import Image


def _png_claiming(path: Path, width: int, height: int) -> None:
    """A valid 1x1 PNG whose IHDR is patched to claim another size (CRC fixed)."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1), "red").save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))


def make_images(root: Path) -> dict[str, Path]:
    img = root / "images"
    img.mkdir(parents=True, exist_ok=True)
    photo = Image.new("RGB", (320, 240))
    for x in range(320):
        for y in range(0, 240, 8):
            photo.putpixel((x, y), (x % 256, y, 128))
    files = {}

    def save(name: str, im: Image.Image, **kw) -> None:
        files[name] = img / name
        im.save(files[name], **kw)

    save("good.jpg", photo, quality=90)
    save("good2.png", photo.rotate(90, expand=True))
    save("cmyk.jpg", photo.convert("CMYK"), quality=90)
    pal = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    save("palette_alpha.png", pal, transparency=0)
    save("gray16.png", Image.new("I;16", (64, 48), 40000))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display: 320x240 stored, 240x320 shown
    save("exif_rotated.jpg", photo, exif=exif, quality=90)
    frames = [Image.new("P", (50, 40), i) for i in range(3)]
    files["animated.gif"] = img / "animated.gif"
    frames[0].save(files["animated.gif"], save_all=True, append_images=frames[1:], duration=50)
    files["zero.jpg"] = img / "zero.jpg"
    files["zero.jpg"].write_bytes(b"")
    full = (img / "good.jpg").read_bytes()
    files["truncated.jpg"] = img / "truncated.jpg"
    files["truncated.jpg"].write_bytes(full[: len(full) // 2])
    files["text.jpg"] = img / "text.jpg"
    files["text.jpg"].write_text("this is not an image\n")
    files["huge.png"] = img / "huge.png"
    _png_claiming(files["huge.png"], 40000, 40000)
    return files


CAPTION = "<__dj__image>\nA colourful test pattern with stripes. <|__dj__eoc|>"


def sample(sid: str, image: str | None, text: str = CAPTION, **extra) -> bytes:
    row = {"id": sid, "text": text, "images": [f"images/{image}"] if image else []}
    row.update(extra)
    return json.dumps(row, ensure_ascii=False).encode()


def make_corpus(root: Path) -> tuple[Path, dict[int, str]]:
    """Write root/nasty.jsonl; return it and {line number: expected fate} for the bad lines.

    Fates: "read:<error prefix>" for quarantine at ingest; "export" for lines that
    must survive a permissive recipe. Blank lines are not samples.
    """
    make_images(root)
    lines: list[bytes] = []
    fate: dict[int, str] = {}

    def add(raw: bytes, expected: str | None) -> None:
        lines.append(raw)
        if expected:
            fate[len(lines)] = expected

    add(b"\xef\xbb\xbf" + sample("bom", "good.jpg"), "export")  # BOM on line 1
    add(sample("crlf", "good2.png") + b"\r", "export")  # CRLF line ending
    add(b"", None)  # blank
    add(b"   ", None)  # whitespace only
    add(b'{"id": "broken", "text": "unterminated', "read:malformed JSON")
    add(
        b'{"id": "latin1", "text": "caf\xe9 <__dj__image>", "images": []}',
        "read:line is not valid UTF-8",
    )
    add(sample("missing", "nope.jpg"), "read:missing image")
    add(sample("zero", "zero.jpg"), "read:not a readable image")
    add(sample("textfile", "text.jpg"), "read:not a readable image")
    add(sample("truncated", "truncated.jpg"), "truncated")  # header fine, pixels not
    add(sample("cmyk", "cmyk.jpg"), "export")
    add(sample("palette", "palette_alpha.png"), "export")
    add(sample("gray16", "gray16.png"), "export")
    add(sample("exif", "exif_rotated.jpg"), "export")
    add(sample("gif", "animated.gif"), "export")
    add(sample("huge", "huge.png"), "huge")
    add(
        json.dumps({"id": "textnum", "text": 42, "images": []}).encode(),
        "read:field 'text' must be a string",
    )
    add(json.dumps({"id": "textnull", "text": None}).encode(), "read:field 'text' must be a string")
    add(json.dumps({"id": "notext", "images": []}).encode(), "read:missing field 'text'")
    add(
        json.dumps({"id": "imgstr", "text": "x", "images": "images/good.jpg"}).encode(),
        "read:field 'images' must be a list",
    )
    add(
        json.dumps({"id": "imgint", "text": "x", "images": [3]}).encode(),
        "read:field 'images' must be a list",
    )
    add(b'["a", "json", "array"]', "read:a sample must be a JSON object")
    add(b"42", "read:a sample must be a JSON object")
    add(sample("dup-id", "good.jpg", text="first of two samples sharing an id"), "export")
    add(sample("dup-id", "good2.png", text="second of two samples sharing an id"), "export")
    add(sample("noimg", None, text="a plain text sample with no images at all"), "export")
    add(
        sample("unicode", None, text="emoji \U0001f600 and \u4e2d\u6587 and \u00e9\u00e8"), "export"
    )
    add(json.dumps({"id": 10**30, "text": "a huge integer id", "images": []}).encode(), "export")
    add(
        sample("extra", "good.jpg", meta={"source": "web", "score": 0.5}, tags=["a", "b"]), "export"
    )
    path = root / "nasty.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path, fate
