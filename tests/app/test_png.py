"""app.png: the libspng fast path decodes plain PNGs exactly as Pillow does, and leaves
everything else (and every error) to the general path."""

from __future__ import annotations

import io
import random
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from app.images import ImageError, decode_opened, open_upload
from app.png import decode_plain_png
from tests.helpers import image_bytes

SIZE = (32, 32)
MAX_PIXELS = 40_000_000


def general(data: bytes) -> np.ndarray:
    return decode_opened(open_upload(data, MAX_PIXELS), SIZE)


def served(data: bytes) -> np.ndarray:
    """What the inference core does: the fast path, else the general one."""
    plain = decode_plain_png(data, SIZE, MAX_PIXELS)
    return general(data) if plain is None else plain


def noise_png(mode: str = "RGB", size=SIZE, seed: int = 0, **save) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    pixels[: size[1] // 2] //= 64  # flat areas too, so that every PNG filter type is chosen
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, format="PNG", **save)
    return buf.getvalue()


def with_chunk(png: bytes, kind: bytes, payload: bytes) -> bytes:
    """``png`` with one chunk inserted after IHDR."""
    chunk = struct.pack(">I", len(payload)) + kind + payload
    chunk += struct.pack(">I", zlib.crc32(kind + payload))
    return png[:33] + chunk + png[33:]


def text_info(keyword: str, value: str, zip: bool = False) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text(keyword, value, zip=zip)
    return info


def split_idat(png: bytes, parts: int) -> bytes:
    """``png`` with its one IDAT chunk split into ``parts`` chunks (as streaming encoders do)."""
    at = png.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", png[at : at + 4])
    payload, rest = png[at + 8 : at + 8 + length], png[at + 12 + length :]
    step = -(-length // parts)
    chunks = b""
    for i in range(0, length, step):
        piece = b"IDAT" + payload[i : i + step]
        chunks += struct.pack(">I", len(piece) - 4) + piece + struct.pack(">I", zlib.crc32(piece))
    return png[:at] + chunks + rest


PLAIN = {
    "rgb": noise_png(),
    "gray": noise_png("L"),
    "stored": noise_png(compress_level=0),
    "optimized": noise_png(optimize=True),
    "dpi": noise_png(dpi=(300, 300)),  # pHYs
    "software text": noise_png(pnginfo=text_info("Software", "test")),  # tEXt
    "gamma": with_chunk(noise_png(), b"gAMA", struct.pack(">I", 45455)),
    "srgb": with_chunk(noise_png(), b"sRGB", b"\x00"),
    "time": with_chunk(noise_png(seed=1), b"tIME", bytes(7)),
    "three idat": split_idat(noise_png(seed=2), 3),
}


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_plain_pngs_take_the_fast_path_and_decode_as_pillow_does(name):
    data = PLAIN[name]
    plain = decode_plain_png(data, SIZE, MAX_PIXELS)
    assert plain is not None
    assert plain.shape == (32, 32, 3) and plain.dtype == np.uint8
    np.testing.assert_array_equal(plain, general(data))


def exif_png() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: Pillow turns the image, so this is not a plain PNG
    return noise_png(exif=exif.tobytes())


def corrupt_crc(png: bytes) -> bytes:
    idat = png.index(b"IDAT")
    return png[: idat + 10] + bytes([png[idat + 10] ^ 0xFF]) + png[idat + 11 :]


def interlaced(png: bytes) -> bytes:
    ihdr = bytearray(png[12:29])
    ihdr[-1] = 1
    return png[:12] + bytes(ihdr) + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


NOT_PLAIN = {
    "other size": noise_png(size=(33, 32)),
    "rgba": noise_png("RGBA"),
    "palette": noise_png("P"),
    "gray alpha": noise_png("LA"),
    "16-bit": image_bytes("PNG", mode="I;16"),
    "interlaced": interlaced(noise_png()),
    "exif chunk": exif_png(),
    "exif as text": noise_png(pnginfo=text_info("Raw profile type exif", "x")),
    "compressed text": noise_png(pnginfo=text_info("Comment", "x", zip=True)),
    "unknown chunk": with_chunk(noise_png(), b"abCD", b"x"),
    "bad crc": corrupt_crc(noise_png()),
    "truncated": noise_png()[:-30],
    "no iend": noise_png()[:-12],
    "jpeg": image_bytes("JPEG"),
    "empty": b"",
    "signature only": b"\x89PNG\r\n\x1a\n",
}


@pytest.mark.parametrize("name", sorted(NOT_PLAIN))
def test_everything_else_is_left_to_the_general_path(name):
    assert decode_plain_png(NOT_PLAIN[name], SIZE, MAX_PIXELS) is None


def test_the_pixel_limit_holds_on_the_fast_path_too():
    assert decode_plain_png(PLAIN["rgb"], SIZE, max_pixels=32 * 32 - 1) is None
    assert decode_plain_png(PLAIN["rgb"], SIZE, max_pixels=32 * 32) is not None


def outcome(decode, data: bytes):
    try:
        return decode(data)
    except ImageError as exc:
        return type(exc)


def test_damaged_pngs_get_the_same_answer_as_from_pillow_alone():
    """Byte flips and truncations of plain PNGs: the served decode (fast path first) gives
    exactly Pillow's pixels or Pillow's error, never a picture Pillow refuses."""
    rng = random.Random(0)
    sources = [PLAIN[name] for name in ("rgb", "gray", "stored", "optimized")]
    fast_taken = 0
    for _ in range(1500):
        data = bytearray(rng.choice(sources))
        if rng.random() < 0.3:
            del data[rng.randrange(8, len(data)) :]
        else:
            for _ in range(rng.randint(1, 3)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        data = bytes(data)
        expected, got = outcome(general, data), outcome(served, data)
        if isinstance(expected, np.ndarray):
            assert isinstance(got, np.ndarray)
            np.testing.assert_array_equal(got, expected)
            fast_taken += decode_plain_png(data, SIZE, MAX_PIXELS) is not None
        else:
            assert got is expected
    assert fast_taken > 0  # some damage (in a flat area of a stored PNG, say) still decodes


def test_the_inference_core_serves_plain_pngs_by_the_fast_path(client, monkeypatch):
    general_path = []

    def recording_open_upload(data, *args, **kwargs):
        general_path.append(data)
        return open_upload(data, *args, **kwargs)

    monkeypatch.setattr("app.api.inference.open_upload", recording_open_upload)
    for name, png in (("gray", PLAIN["gray"]), ("rgba", NOT_PLAIN["rgba"])):
        r = client.post("/predict", files={"file": (f"{name}.png", png, "image/png")})
        assert r.status_code == 200, r.text
    assert general_path == [NOT_PLAIN["rgba"]]  # the plain PNG never reached Pillow


def test_a_large_file_is_decoded_off_the_event_loop(tiny_model_root, monkeypatch):
    """A 32x32 PNG with a megabyte of text is plain, but checking its chunks' CRCs takes
    milliseconds: it is decoded in the thread pool; a small one stays on the loop."""
    import asyncio
    import threading

    from app.api import inference
    from app.api.inference import EncodedImage, InferenceCore
    from app.model import load_served_model
    from tests.helpers import make_settings

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "x" * (1024 * 1024))
    buf = io.BytesIO()
    Image.open(io.BytesIO(PLAIN["rgb"])).save(buf, format="PNG", pnginfo=info)
    large, small = buf.getvalue(), PLAIN["rgb"]
    assert len(large) > inference.INLINE_DECODE_BYTES >= len(small)
    threads = []

    def recording(data, *args):
        threads.append((len(data), threading.current_thread() is threading.main_thread()))
        return decode_plain_png(data, *args)

    monkeypatch.setattr(inference, "decode_plain_png", recording)
    model = load_served_model(tiny_model_root, runtime="tensorflow")
    core = InferenceCore(make_settings(tiny_model_root), model, batcher=None, metrics=None)

    async def both():
        return [await core.decode(EncodedImage(d, "a.png")) for d in (large, small)]

    from_large, from_small = asyncio.run(both())
    assert threads == [(len(large), False), (len(small), True)]
    np.testing.assert_array_equal(from_large, from_small)  # the text changes no pixel
