"""Compact figures: what the leaderboard, study page and emergence figure save as PNG.

Matplotlib writes 8-bit RGBA PNGs: a layer curve of 550x340 pixels is about 45 kB, and the
leaderboard page embeds every one of them again. Rendered figures hold a few hundred to a
few thousand distinct colours (anti-aliased edges, a colour map), so an adaptive palette of
256 colours (Pillow's maximum-coverage quantiser, no dithering) reproduces them within a few
levels of 255 per channel while the PNG shrinks to about a third; images that already have
256 colours or fewer keep their exact colours. Images with transparency are only recompressed
(lossless). Quantisation is deterministic: the same figure gives the same bytes.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

PALETTE_COLOURS = 256


def compact_png(data: bytes) -> bytes:
    """``data`` (any PNG) as a palette PNG of at most 256 colours, compressed at the highest
    level; a transparent image is recompressed losslessly instead."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.mode == "P" and "transparency" not in im.info:
            out = im
        elif im.mode in ("RGBA", "LA") and im.getchannel("A").getextrema()[0] < 255:
            out = im  # transparency: keep every pixel as it is
        else:
            rgb = im.convert("RGB")
            exact = rgb.getcolors(PALETTE_COLOURS)
            if exact is not None:  # few colours: a palette of exactly those
                palette = Image.new("P", (1, 1))
                colours = [c for _, rgb_ in exact for c in rgb_]
                palette.putpalette(colours + [0] * (768 - len(colours)))
                out = rgb.quantize(palette=palette, dither=Image.Dither.NONE)
            else:
                out = rgb.quantize(colors=PALETTE_COLOURS, method=Image.Quantize.MAXCOVERAGE,
                                   dither=Image.Dither.NONE)
        buf = io.BytesIO()
        out.save(buf, format="PNG", optimize=True, compress_level=9)
    return buf.getvalue()


def save_png(fig, path: Path) -> Path:
    """Render a Matplotlib figure at its own dpi, compact it (:func:`compact_png`) and write it
    to ``path`` atomically (temporary name, then rename); no timestamp or software tag."""
    from harness.fsutil import write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    write_bytes(path, compact_png(buf.getvalue()))
    return Path(path)
