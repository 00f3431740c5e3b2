"""Draw examples/wren.png: a small portrait of Wren Halloway, her card inside it.

The card is examples/wren.json (Character Card V2). It goes into the PNG the way
SillyTavern and other card tools store it: the JSON, base64-encoded, in a `tEXt`
chunk with the keyword `chara`. The drawing is Pillow shapes only, so the same Pillow
version writes the same bytes. Regenerate from the repository root with

    python examples/make_card.py            # or: python examples/make_card.py OUT.png
"""

from __future__ import annotations

import base64
import json
import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, PngImagePlugin

HERE = Path(__file__).resolve().parent
SIZE = 256
HORIZON = 150


def lerp(a: tuple[int, ...], b: tuple[int, ...], t: float) -> tuple[int, ...]:
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b, strict=True))


def sky_and_sea(draw: ImageDraw.ImageDraw) -> None:
    """Dusk: indigo above, a warm band at the horizon, a dark sea with lighter swells."""
    for y in range(HORIZON):
        t = y / HORIZON
        top, middle, low = (24, 22, 64), (92, 60, 120), (238, 146, 88)
        colour = lerp(top, middle, t / 0.6) if t < 0.6 else lerp(middle, low, (t - 0.6) / 0.4)
        draw.line([(0, y), (SIZE, y)], fill=colour)
    for y in range(HORIZON, SIZE):
        draw.line([(0, y), (SIZE, y)], fill=lerp((40, 70, 96), (12, 28, 44),
                                                  (y - HORIZON) / (SIZE - HORIZON)))
    waves = random.Random(7)
    for _ in range(40):
        x, y = waves.randrange(SIZE), waves.randrange(HORIZON + 4, SIZE)
        length = waves.randrange(6, 22)
        draw.arc([x, y, x + length, y + 6], 200, 340, fill=(96, 136, 160), width=1)


def stars(draw: ImageDraw.ImageDraw) -> None:
    sky = random.Random(3)
    for _ in range(28):
        x, y = sky.randrange(SIZE), sky.randrange(70)
        r = sky.choice((0, 0, 1))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 250, 230))


def lighthouse(image: Image.Image) -> Image.Image:
    """A striped tower on a headland, its lamp lit and two beams across the sky."""
    beams = Image.new("RGBA", image.size, (0, 0, 0, 0))
    glow = ImageDraw.Draw(beams)
    glow.polygon([(212, 58), (SIZE, 30), (SIZE, 78)], fill=(255, 236, 150, 90))
    glow.polygon([(204, 58), (96, 20), (104, 44)], fill=(255, 236, 150, 70))
    glow.ellipse([196, 44, 222, 70], fill=(255, 226, 120, 150))
    image = Image.alpha_composite(image, beams.filter(ImageFilter.GaussianBlur(3)))
    draw = ImageDraw.Draw(image)
    draw.polygon([(170, HORIZON + 2), (190, 136), (238, 132), (SIZE, 140), (SIZE, HORIZON + 2)],
                 fill=(36, 34, 40))  # the headland
    for i, top in enumerate(range(66, 140, 15)):  # the tower, in bands, narrowing upwards
        bottom = min(top + 15, 140)
        half_top, half_bottom = 7 + (top - 66) * 0.06, 7 + (bottom - 66) * 0.06
        colour = (232, 230, 222) if i % 2 == 0 else (186, 44, 44)
        draw.polygon([(209 - half_top, top), (209 + half_top, top),
                      (209 + half_bottom, bottom), (209 - half_bottom, bottom)], fill=colour)
    draw.rectangle([202, 52, 216, 66], fill=(255, 222, 110), outline=(40, 40, 40))
    draw.polygon([(200, 52), (209, 42), (218, 52)], fill=(60, 40, 40))
    return image


def portrait(draw: ImageDraw.ImageDraw) -> None:
    """Head and shoulders: a yellow oilskin and sou'wester, auburn hair, a weathered face."""
    oilskin, shade = (232, 186, 48), (190, 142, 30)
    skin, cheek = (222, 170, 132), (204, 132, 110)
    hair = (120, 58, 36)
    draw.ellipse([28, 196, 196, 330], fill=oilskin)  # shoulders
    draw.polygon([(112, 200), (96, 256), (128, 256)], fill=shade)  # the coat's opening
    draw.line([(112, 204), (112, 256)], fill=(120, 86, 20), width=2)
    draw.rectangle([98, 170, 126, 206], fill=skin)  # neck
    draw.ellipse([64, 100, 160, 150], fill=hair)  # hair behind the head
    draw.rectangle([64, 120, 160, 196], fill=hair)
    draw.ellipse([76, 96, 148, 188], fill=skin)  # face
    draw.chord([50, 66, 174, 130], 180, 360, fill=oilskin)  # the hat's crown
    draw.ellipse([40, 96, 184, 122], fill=shade)  # its brim
    draw.ellipse([44, 94, 180, 116], fill=oilskin)
    for x in (96, 120):  # eyes, brows, cheeks
        draw.ellipse([x, 134, x + 10, 141], fill=(250, 246, 240))
        draw.ellipse([x + 3, 135, x + 8, 140], fill=(44, 70, 84))
        draw.line([(x - 1, 128), (x + 11, 126)], fill=hair, width=2)
        draw.ellipse([x - 4, 150, x + 8, 158], fill=cheek)
    draw.line([(112, 140), (109, 156), (114, 157)], fill=(176, 120, 96), width=2)  # nose
    draw.arc([100, 158, 126, 172], 20, 160, fill=(150, 70, 64), width=2)  # a half smile


def draw_wren() -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE))
    draw = ImageDraw.Draw(image)
    sky_and_sea(draw)
    stars(draw)
    image = lighthouse(image.convert("RGBA"))
    portrait(ImageDraw.Draw(image))
    return image.convert("RGB")


def card_text() -> str:
    """The card as compact JSON (checked to be JSON before it is embedded)."""
    card = json.loads((HERE / "wren.json").read_text(encoding="utf-8"))
    assert card["spec"] == "chara_card_v2", "wren.json must be a Character Card V2"
    return json.dumps(card, ensure_ascii=False, separators=(",", ":"))


def main(out: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("chara", base64.b64encode(card_text().encode("utf-8")).decode("ascii"))
    draw_wren().save(out, pnginfo=info, optimize=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "wren.png")
