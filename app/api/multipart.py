"""Multipart form bodies as a list of parts: a fast path for the common upload, Starlette's
parser for everything else.

The fast path reads a body as ``curl -F``, browsers, requests, httpx and tritonclient-style
clients send it: parts separated by the boundary, each with only ``Content-Disposition:
form-data; name="..."[; filename="..."]`` and an optional ``Content-Type``, no preamble or
epilogue. It finds the parts in the one buffer the body arrived in (no spooled files, no
per-chunk callbacks). Any body it does not recognise exactly goes to Starlette's streaming parser
(python-multipart), which either reads it or raises ``MultiPartException``; so both paths give
the same parts.

A part with an image (or ``application/octet-stream``) ``Content-Type`` is a file even when its
``Content-Disposition`` names no filename; Starlette would decode such a part as text, losing its
bytes. Clients that build parts themselves (and schema-driven ones) send images that way.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from tempfile import SpooledTemporaryFile

from starlette.datastructures import FormData, Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

BINARY_PART_TYPES = (b"image/", b"application/octet-stream")
MAX_PARTS = 1000  # Starlette's own limit on files and on fields

__all__ = [
    "MultiPartException",
    "Part",
    "parse_multipart",
    "parse_with_starlette",
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
    chunks = body[len(delimiter) + 2 : end].split(b"\r\n" + delimiter + b"\r\n")
    if len(chunks) > MAX_PARTS:
        return None
    parts = []
    for chunk in chunks:
        head_end = chunk.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        disposition = content_type = None
        for line in chunk[:head_end].split(b"\r\n"):
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
        parts.append(Part(name, chunk[head_end + 4 :], is_file, filename, type_text))
    return parts


class _ImagePartsParser(MultiPartParser):
    def on_headers_finished(self) -> None:
        super().on_headers_finished()
        part = self._current_part
        content_type = dict((k.lower(), v) for k, v in part.item_headers).get(b"content-type", b"")
        if part.file is None and content_type.lower().startswith(BINARY_PART_TYPES):
            self._current_fields -= 1
            self._current_files += 1
            if self._current_files > self.max_files:
                raise MultiPartException(
                    f"Too many files. Maximum number of files is {self.max_files}."
                )
            spool = SpooledTemporaryFile(max_size=self.spool_max_size)
            self._files_to_close_on_error.append(spool)
            part.file = UploadFile(file=spool, size=0, headers=Headers(raw=part.item_headers))


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def parse_multipart(headers: Headers, body: bytes, max_file_bytes: int) -> list[Part]:
    """The parts of a ``multipart/form-data`` body (raises ``MultiPartException`` for a
    malformed one). A file part keeps at most ``max_file_bytes + 1`` bytes on the slow path,
    enough for the caller to refuse it as too large."""
    match = _BOUNDARY.search(headers.get("content-type", ""))
    if match is not None:
        parts = split_plain(body, match[1].encode("latin-1"))
        if parts is not None:
            return parts
    return await parse_with_starlette(headers, body, max_file_bytes)


async def parse_with_starlette(headers: Headers, body: bytes, max_file_bytes: int) -> list[Part]:
    """The slow path: Starlette's streaming parser (python-multipart), any valid body."""
    form = await _ImagePartsParser(headers, _once(body)).parse()
    try:
        return await parts_of_form(form, max_file_bytes)
    finally:
        await form.close()


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
