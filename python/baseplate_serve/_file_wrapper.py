"""``environ["wsgi.file_wrapper"]``. The server sends regular files with
sendfile(2); anything else is read in blocks like any iterable."""
from __future__ import annotations

from typing import IO, Iterator


class FileWrapper:
    """Wraps a file-like object as a WSGI response body."""

    def __init__(self, filelike: IO[bytes], blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self) -> Iterator[bytes]:
        while True:
            block = self.filelike.read(self.blksize)
            if not block:
                return
            yield block

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()
