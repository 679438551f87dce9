"""The multipart fast path reads plain bodies exactly as the general path (python-multipart)
does, and leaves every other body to it; the general path reads what Starlette's form parser
reads."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.datastructures import Headers

from app.api.multipart import (
    MultiPartException,
    parse_general,
    parse_multipart,
    parts_of_form,
    split_plain,
)
from tests.helpers import image_bytes

PNG = image_bytes()
LIMIT = 1_000_000


def _encoded(**kwargs) -> tuple[Headers, bytes]:
    """A body as httpx (like requests and most clients) encodes it."""
    request = httpx.Request("POST", "http://x/predict", **kwargs)
    return Headers(raw=[(k.lower(), v) for k, v in request.headers.raw]), request.read()


def _boundary(headers: Headers) -> bytes:
    return headers["content-type"].split("boundary=")[1].strip('"').encode()


PLAIN = {
    "one_file": {"files": {"file": ("a.png", PNG, "image/png")}},
    "several_files_and_text": {
        "files": [("files", ("1.png", PNG, "image/png")), ("files", ("2.png", b"xy", "image/png"))],
        "data": {"note": "héllo", "files": "string"},
    },
    "no_content_type": {"files": {"file": ("a.bin", PNG)}},
    "empty_file": {"files": {"file": ("a.png", b"", "image/png")}},
    "bytes_with_crlf_and_dashes": {
        "files": {"file": ("a", b"\r\n--\r\n--x--\r\n\r\n", "image/png")}
    },
}


@pytest.mark.parametrize("name", PLAIN)
def test_plain_bodies_take_the_fast_path_and_match_starlette(name):
    headers, body = _encoded(**PLAIN[name])
    fast = split_plain(body, _boundary(headers))
    assert fast is not None
    slow = asyncio.run(parse_general(headers, body, LIMIT))
    assert fast == slow
    assert asyncio.run(parse_multipart(headers, body, LIMIT)) == slow


def _handmade(boundary: str, parts: list[tuple[list[str], bytes]], pre=b"", post=b"") -> bytes:
    out = pre
    for head, data in parts:
        out += f"--{boundary}\r\n".encode() + "\r\n".join(head).encode() + b"\r\n\r\n"
        out += data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode() + post


IMAGE_PART = ['Content-Disposition: form-data; name="file"', "Content-Type: image/png"]
UNUSUAL = {
    # an image part without a filename is a file all the same (both paths)
    "image_without_filename": _handmade("b", [(IMAGE_PART, PNG)]),
    "epilogue": _handmade("b", [(IMAGE_PART, PNG)], post=b"an epilogue"),
    "other_header": _handmade("b", [([*IMAGE_PART, "Content-Transfer-Encoding: binary"], PNG)]),
    "escaped_quote_in_filename": _handmade(
        "b",
        [(['Content-Disposition: form-data; name="file"; filename="a\\"b.png"'], PNG)],
    ),
    "unquoted_name": _handmade("b", [(["Content-Disposition: form-data; name=file"], b"text")]),
}


@pytest.mark.parametrize("name", UNUSUAL)
def test_other_bodies_get_the_general_paths_answer(name):
    headers = Headers({"content-type": "multipart/form-data; boundary=b"})
    body = UNUSUAL[name]
    if name != "image_without_filename":
        assert split_plain(body, b"b") is None
    parsed = asyncio.run(parse_multipart(headers, body, LIMIT))
    assert parsed == asyncio.run(parse_general(headers, body, LIMIT))
    assert parsed and parsed[0].name == "file"


def test_image_part_without_filename_is_a_file():
    headers = Headers({"content-type": "multipart/form-data; boundary=b"})
    (part,) = asyncio.run(parse_multipart(headers, UNUSUAL["image_without_filename"], LIMIT))
    assert part.is_file and part.data == PNG and part.content_type == "image/png"


@pytest.mark.parametrize(
    "body",
    [
        b"--b\r\nno headers, no end",
        _handmade("b", [(IMAGE_PART, PNG)], pre=b"a preamble, which python-multipart refuses\r\n"),
    ],
)
def test_bodies_starlette_refuses_are_refused(body):
    headers = Headers({"content-type": "multipart/form-data; boundary=b"})
    assert split_plain(body, b"b") is None
    with pytest.raises(MultiPartException):
        asyncio.run(parse_multipart(headers, body, LIMIT))


async def _starlette_parts(headers: Headers, body: bytes) -> list:
    """The body as Starlette's own form parser reads it (``request.form()``)."""
    from starlette.formparsers import MultiPartParser

    async def once():
        yield body

    form = await MultiPartParser(headers, once()).parse()
    try:
        return await parts_of_form(form, LIMIT)
    finally:
        await form.close()


# (Starlette's parser reads an image part without a filename as text: those bodies are left out)
@pytest.mark.parametrize("name", [*PLAIN, "escaped_quote_in_filename", "unquoted_name"])
def test_the_general_path_reads_what_starlettes_form_parser_reads(name):
    if name in PLAIN:
        headers, body = _encoded(**PLAIN[name])
    else:
        headers, body = Headers({"content-type": "multipart/form-data; boundary=b"}), UNUSUAL[name]
    assert asyncio.run(parse_general(headers, body, LIMIT)) == asyncio.run(
        _starlette_parts(headers, body)
    )


def test_the_general_path_keeps_only_what_the_limits_need():
    headers = Headers({"content-type": "multipart/form-data; boundary=b"})
    big = _handmade("b", [(IMAGE_PART, b"x" * 5000)])
    (part,) = asyncio.run(parse_general(headers, big, 100))
    assert part.data == b"x" * 101  # enough to refuse it as larger than 100 bytes
    text = ['Content-Disposition: form-data; name="note"']
    with pytest.raises(MultiPartException, match="maximum size of 1024KB"):
        asyncio.run(parse_general(headers, _handmade("b", [(text, b"y" * (1024 * 1024 + 1))]), 100))
    many = _handmade("b", [(text, b"z")] * 1001)
    with pytest.raises(MultiPartException, match="Too many parts"):
        asyncio.run(parse_general(headers, many, 100))
