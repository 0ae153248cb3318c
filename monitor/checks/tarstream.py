"""The bytes of a tar archive as tarfile reads them, decompressed in reused buffers.

`archives.verify_tar` hands `Forward(decompressed(path, ...))` to tarfile as a plain
(uncompressed, seekable-forward) file: gzip, bzip2 and xz are recognised by their
magic numbers and decompressed here in IN_PIECE/OUT_PIECE steps, so the pages that
carry gigabytes are the same few (see `archives._gunzip`), and a gzip CRC is checked.
"""

import os

from monitor.checks.archives import (IN_PIECE, MAX_INFLATE, OUT_PIECE, VerifyError, VerifyTimeout, _gunzip,
                                     _reader)


def decompressed(path: str, deadline: float, clock):
    """Yield the file's bytes, decompressed if gzip, bzip2 or xz (by their magic numbers)."""
    chunks = _reader(path, deadline, clock)
    first = next(chunks, b"")
    head = bytes(first[:10])
    rest = chained(first, chunks)
    if head.startswith(b"\x1f\x8b\x08"):
        try:
            yield from _gunzip(rest, deadline, clock, [0])
        except VerifyError as exc:
            raise VerifyError(f"truncated or corrupt tar archive: {exc}") from None
        return
    if head[:3] == b"BZh" and head[4:10] == b"1AY&SY":
        import bz2

        make, error = bz2.BZ2Decompressor, OSError
    elif head.startswith((b"\xfd7zXZ", b"\x5d\x00\x00\x80")):
        import lzma

        make, error = lzma.LZMADecompressor, lzma.LZMAError
    else:
        yield from rest
        return
    inflater = make()
    for chunk in rest:
        for start in range(0, len(chunk), IN_PIECE):
            data = chunk[start:start + IN_PIECE]
            while data:
                if inflater.eof:  # another stream follows (pbzip2, concatenated xz) unless padding
                    if not bytes(data).strip(b"\0"):
                        break
                    inflater = make()
                try:
                    yield inflater.decompress(data, OUT_PIECE)
                    while not inflater.needs_input and not inflater.eof:
                        if clock() > deadline:
                            raise VerifyTimeout()
                        yield inflater.decompress(b"", OUT_PIECE)
                except (error, EOFError) as exc:
                    raise VerifyError(f"truncated or corrupt tar archive: {exc}") from None
                data = inflater.unused_data if inflater.eof else b""
    if not inflater.eof:
        raise VerifyError("truncated or corrupt tar archive: the compressed stream ends early")


def chained(first, rest):
    if first:
        yield first
    yield from rest


class Forward:
    """A stream of pieces read as a file by tarfile: read, tell, and seek forward.

    A seek skips whole pieces without copying them; read copies only what tarfile
    asks for (headers, long names, pax records), at most MAX_INFLATE at once.
    """

    def __init__(self, pieces):
        self.pieces, self.piece, self.pos = pieces, memoryview(b""), 0

    def _fill(self) -> bool:
        while not self.piece:
            piece = next(self.pieces, None)
            if piece is None:
                return False
            self.piece = memoryview(piece)
        return True

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > MAX_INFLATE:
            raise VerifyError(f"truncated or corrupt tar archive: a header needs {size} bytes")
        out = []
        while size and self._fill():
            taken = self.piece[:size]
            out.append(bytes(taken))
            self.piece = self.piece[len(taken):]
            size -= len(taken)
            self.pos += len(taken)
        return b"".join(out)

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET or pos < self.pos:  # a hostile size field; tarfile only goes forward
            raise VerifyError("truncated or corrupt tar archive: a header points backwards")
        while self.pos < pos and self._fill():
            skipped = min(len(self.piece), pos - self.pos)
            self.piece = self.piece[skipped:]
            self.pos += skipped
        return self.pos

    def tell(self) -> int:
        return self.pos

    def drain(self) -> None:
        for _ in self.pieces:
            pass
