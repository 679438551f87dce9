"""Multipart form bodies as a list of parts: a fast path for the common upload, python-multipart's
streaming parser (the one Starlette uses) for everything else.

The fast path reads a body as ``curl -F``, browsers, requests, httpx and tritonclient-style
clients send it: parts separated by the boundary, each with only ``Content-Disposition:
form-data; name="..."[; filename="..."]`` and an optional ``Content-Type``, no preamble or
epilogue. It finds the parts in the one buffer the body arrived in (no spooled files, no
per-chunk callbacks). Any body it does not recognise exactly goes to ``parse_general``:
python-multipart's parser through its public callbacks, with Starlette's limits and messages,
which either reads it or raises ``MultiPartException``; so both paths give the same parts.

A part with an image (or ``application/octet-stream``) ``Content-Type`` is a file even when its
``Content-Disposition`` names no filename; Starlette's form parser would decode such a part as
text, losing its bytes. Clients that build parts themselves (and schema-driven ones) send images
that way.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, Headers, UploadFile
from starlette.formparsers import MultiPartException

BINARY_PART_TYPES = (b"image/", b"application/octet-stream")
MAX_PARTS = 1000  # Starlette's own limit on files and on fields
MAX_FIELD_BYTES = 1024 * 1024  # Starlette's limit on a text field
# Bodies larger than this take the general path in a worker thread: python-multipart parsed a
# 28.8 MB body in 0.15 s, which the event loop must not spend.
INLINE_PARSE_BYTES = 256 * 1024

__all__ = [
    "MultiPartException",
    "Part",
    "parse_multipart",
    "parse_general",
    "parts_of_form",
    "split_plain",
]


@dataclass(frozen=True, slots=True)
class Part:
    """One form part: a file (its bytes) or a text field (its UTF-8 bytes)."""

    name: str
    data: bytes
    is_file: bool
    filename: str | None = None
    content_type: str = ""


_BOUNDARY = re.compile(r'boundary="?([^";,]{1,200})"?', re.IGNORECASE)
_DISPOSITION = re.compile(
    rb'form-data; ?name="([^"\\\r\n]*)"(?:; ?filename="([^"\\\r\n]*)")?', re.IGNORECASE
)


def split_plain(body: bytes, boundary: bytes) -> list[Part] | None:
    """The parts of a plain multipart body, or ``None`` if it is anything less plain."""
    delimiter = b"--" + boundary
    if not body.startswith(delimiter + b"\r\n"):
        return None
    end = body.rfind(b"\r\n" + delimiter + b"--")
    if end < 0 or body[end + len(delimiter) + 4 :] not in (b"", b"\r\n"):
        return None
    separator = b"\r\n" + delimiter + b"\r\n"
    bounds, start = [], len(delimiter) + 2
    while (found := body.find(separator, start, end)) >= 0:  # as bytes.split, without copies
        bounds.append((start, found))
        start = found + len(separator)
        if len(bounds) >= MAX_PARTS:
            return None
    bounds.append((start, end))
    parts = []
    for start, stop in bounds:
        head_end = body.find(b"\r\n\r\n", start, stop)
        if head_end < 0:
            return None
        disposition = content_type = None
        for line in body[start:head_end].split(b"\r\n"):
            key, sep, value = line.partition(b":")
            key = key.strip().lower()
            if not sep or key not in (b"content-disposition", b"content-type"):
                return None  # a header of another kind: leave the body to Starlette
            if key == b"content-disposition":
                disposition = _DISPOSITION.fullmatch(value.strip())
            else:
                content_type = value.strip()
        if disposition is None:
            return None
        try:
            name = disposition[1].decode()
            filename = None if disposition[2] is None else disposition[2].decode()
            type_text = (content_type or b"").decode("ascii")
        except UnicodeDecodeError:
            return None
        is_file = filename is not None or (content_type or b"").lower().startswith(
            BINARY_PART_TYPES
        )
        parts.append(Part(name, body[head_end + 4 : stop], is_file, filename, type_text))
    return parts


class _PartCollector:
    """python-multipart's callbacks, collecting ``Part``s in order: a file part keeps at most
    ``max_file_bytes + 1`` bytes (enough to refuse it as too large), a text field at most
    ``MAX_FIELD_BYTES``, and a body of more than ``MAX_PARTS`` parts is refused, as
    Starlette's form parser does."""

    def __init__(self, charset: str, max_file_bytes: int) -> None:
        self.charset, self.max_file_bytes = charset, max_file_bytes
        self.parts: list[Part] = []
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._data = bytearray()
        self._name: str | None = None
        self._filename: str | None = None
        self._is_file = False

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        if len(self.parts) >= MAX_PARTS:
            raise MultiPartException(f"Too many parts. Maximum number of parts is {MAX_PARTS}.")
        self._headers, self._data = {}, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[bytes(self._header_name).lower()] = bytes(self._header_value)
        self._header_name, self._header_value = bytearray(), bytearray()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise MultiPartException(
                'The Content-Disposition header field "name" must be provided.'
            )
        self._name = options[b"name"].decode(self.charset, errors="replace")
        raw_filename = options.get(b"filename")
        self._filename = (
            None if raw_filename is None else raw_filename.decode(self.charset, errors="replace")
        )
        content_type = self._headers.get(b"content-type", b"").lower()
        self._is_file = self._filename is not None or content_type.startswith(BINARY_PART_TYPES)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            room = self.max_file_bytes + 1 - len(self._data)
            self._data += data[start : start + max(0, min(room, end - start))]
        elif len(self._data) + end - start > MAX_FIELD_BYTES:
            raise MultiPartException(f"Part exceeded maximum size of {MAX_FIELD_BYTES // 1024}KB.")
        else:
            self._data += data[start:end]

    def on_part_end(self) -> None:
        content_type = self._headers.get(b"content-type", b"").decode("latin-1")
        self.parts.append(
            Part(self._name or "", bytes(self._data), self._is_file, self._filename, content_type)
            if self._is_file
            else Part(self._name or "", bytes(self._data), False)
        )


async def parse_multipart(headers: Headers, body: bytes, max_file_bytes: int) -> list[Part]:
    """The parts of a ``multipart/form-data`` body (raises ``MultiPartException`` for a
    malformed one). A file part keeps at most ``max_file_bytes + 1`` bytes on the general path,
    enough for the caller to refuse it as too large."""
    match = _BOUNDARY.search(headers.get("content-type", ""))
    if match is not None:
        parts = split_plain(body, match[1].encode("latin-1"))
        if parts is not None:
            return parts
    if len(body) > INLINE_PARSE_BYTES:  # a large body: python-multipart's parse takes ms
        return await run_in_threadpool(parse_general_now, headers, body, max_file_bytes)
    return parse_general_now(headers, body, max_file_bytes)


async def parse_general(headers: Headers, body: bytes, max_file_bytes: int) -> list[Part]:
    """The general path, on the event loop (``parse_general_now``)."""
    return parse_general_now(headers, body, max_file_bytes)


def parse_general_now(headers: Headers, body: bytes, max_file_bytes: int) -> list[Part]:
    """The general path: python-multipart's streaming parser, any valid body (raises
    ``MultiPartException`` for a malformed one, as Starlette's form parser does)."""
    _, params = parse_options_header(headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise MultiPartException("Missing boundary in multipart.")
    charset = params.get(b"charset", b"utf-8").decode("latin-1")
    try:
        charset = codecs.lookup(charset).name
    except LookupError:
        charset = "latin-1"
    collector = _PartCollector(charset, max_file_bytes)
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:
        raise MultiPartException("Invalid multipart data.") from exc
    return collector.parts


async def parts_of_form(form: FormData, max_file_bytes: int) -> list[Part]:
    """Starlette's ``FormData`` as parts, in order."""
    parts = []
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            data = await value.read(max_file_bytes + 1)
            parts.append(Part(name, data, True, value.filename, value.content_type or ""))
        else:
            parts.append(Part(name, value.encode(), False))
    return parts
