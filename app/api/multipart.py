"""Multipart parsing for uploads: Starlette's parser, with one difference.

A part with an image (or ``application/octet-stream``) ``Content-Type`` is a file even when its
``Content-Disposition`` names no filename; Starlette would decode such a part as text, losing its
bytes. Clients that build parts themselves (and schema-driven ones) send images that way.
"""

from __future__ import annotations

from tempfile import SpooledTemporaryFile

from starlette.datastructures import FormData, Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

BINARY_PART_TYPES = (b"image/", b"application/octet-stream")

__all__ = ["MultiPartException", "read_form"]


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


async def read_form(request: Request) -> FormData:
    """The request's multipart form (raises ``MultiPartException`` for a malformed body)."""
    return await _ImagePartsParser(request.headers, request.stream()).parse()
