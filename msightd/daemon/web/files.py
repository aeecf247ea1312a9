"""Serving files from the save and thumbnail directories, and nothing outside them.

A URL never carries a path, only a file *name*, which must match :data:`SAFE_FILE_NAME` (no slash, no
leading dot, so no ``..`` and no hidden file) and end in an allowed suffix. The file is then opened
relative to an open descriptor of its directory with ``O_NOFOLLOW`` (a symlink is refused, wherever it
points) and served only if it is a regular file (a FIFO or device could block or leak). The checks are
on the descriptor that is then read, so a file swapped between check and read cannot slip through.

Video needs HTTP Range requests (a ``<video>`` element seeks by asking for byte ranges); one range per
request is supported, as browsers ask, and ``If-Range`` with the ETag falls back to the whole file when
the file changed.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Collection
from email.utils import formatdate
from pathlib import Path
from typing import BinaryIO

from msightd.daemon.web.http import Request, Response, text_response

#: A file name the web serves: letters, digits, ``._-``; starts with a letter or digit.
SAFE_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,250}")
CONTENT_TYPES = {".mp4": "video/mp4", ".json": "application/json", ".jpg": "image/jpeg"}
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class RangeNotSatisfiable(ValueError):
    pass


def open_in_dir(directory: Path, name: str, suffixes: Collection[str]) -> tuple[BinaryIO, os.stat_result] | None:
    """Open the regular file ``name`` that sits directly in ``directory``; ``None`` when there is no such
    file or the name, the suffix or the file type is not allowed. The caller owns the returned file."""
    if not SAFE_FILE_NAME.fullmatch(name) or os.path.splitext(name)[1] not in suffixes:
        return None
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    finally:
        os.close(dir_fd)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb"), info


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The ``(offset, length)`` a ``Range`` header asks of a ``size``-byte file; ``None`` for the whole
    file (no header, or one this server does not do, e.g. several ranges: RFC 9110 lets it answer 200).
    Raises :class:`RangeNotSatisfiable` for a range that starts past the end."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        length = min(int(last), size)
        if length == 0:
            raise RangeNotSatisfiable(header)
        return size - length, length
    start = int(first)
    if start >= size:
        raise RangeNotSatisfiable(header)
    end = min(int(last), size - 1) if last else size - 1
    if end < start:
        return None
    return start, end - start + 1


def etag(info: os.stat_result) -> str:
    return f'"{info.st_ino:x}-{info.st_size:x}-{info.st_mtime_ns:x}"'


def file_response(request: Request, directory: Path, name: str, *, cache_s: int = 0) -> Response:
    """Serve ``directory/name`` (see :func:`open_in_dir`) with Range, ETag and If-Range support.

    ``cache_s`` 0 means ``no-store`` (thumbnails change every few seconds under the same name); segments
    never change once written and may be cached.
    """
    suffix = os.path.splitext(name)[1]
    opened = open_in_dir(directory, name, CONTENT_TYPES.keys())
    if opened is None:
        return text_response(404, f"no such file: {name[:100]}")
    file, info = opened
    tag = etag(info)
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": tag,
        "Last-Modified": formatdate(info.st_mtime, usegmt=True),
        "Cache-Control": f"private, max-age={cache_s}" if cache_s else "no-store",
    }
    if request.headers.get("If-None-Match") == tag:
        file.close()
        return Response(status=304, headers=headers)
    size = info.st_size
    if_range = request.headers.get("If-Range")
    try:
        wanted = byte_range(request.headers.get("Range"), size) if if_range in (None, tag) else None
    except RangeNotSatisfiable:
        file.close()
        return Response(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    response = Response(content_type=CONTENT_TYPES[suffix], headers=headers, file=file, length=size)
    if wanted is not None:
        response.status = 206
        response.offset, response.length = wanted
        headers["Content-Range"] = f"bytes {wanted[0]}-{wanted[0] + wanted[1] - 1}/{size}"
    return response
