"""Archive verification for the backup check: is the file whole, read to its last byte?

Each verifier streams the file (gzip, tar, zip, or its SHA-256 against a sidecar)
in constant memory whatever its size, checks the deadline between chunks, and
returns a one-line verdict or raises VerifyError (damaged) or VerifyTimeout.
`checks/backups.py` decides when to verify and what the verdict means.
"""

import contextlib
import hashlib
import os
import stat
import struct
import time
import zlib

try:  # ISA-L's inflate: about twice zlib's speed on gzip (README: backup verification)
    from isal import isal_zlib as inflating
except ImportError:  # pragma: no cover - isal is a dependency; a distro build may lack it
    inflating = zlib

CHUNK = 1 << 20          # read size
MAX_INFLATE = 4 << 20    # bound on decompressed bytes held at once (a zip bomb stays small)
IN_PIECE = 16 << 10      # compressed bytes fed to a decompressor at once (gzip, tar)
OUT_PIECE = 32 << 10     # decompressed bytes it returns at once: one malloc'd block, reused


class VerifyError(Exception):
    """The file is damaged: truncated, CRC error, digest mismatch, missing sidecar."""


class VerifyTimeout(Exception):
    pass


def _reader(path: str, deadline: float, clock=time.monotonic):
    """Yield the file's bytes in CHUNK pieces, raising VerifyTimeout past the deadline."""
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while True:
            if clock() > deadline:
                raise VerifyTimeout()
            n = handle.readinto(buffer)
            if not n:
                return
            yield view[:n]


def verify_gzip(path: str, deadline: float, clock=time.monotonic) -> str:
    """Decompress every gzip member to the end; zlib checks each member's CRC32 and length."""
    members = [0]
    for _ in _gunzip(_reader(path, deadline, clock), deadline, clock, members):
        pass
    return f"gzip ok ({members[0]} member{'s' if members[0] > 1 else ''}, CRC checked)"


def _gunzip(chunks, deadline: float, clock, members: list):
    """Yield the decompressed bytes of gzip `chunks` in pieces of at most OUT_PIECE.

    The input is fed IN_PIECE at a time from the reader's one buffer, the output comes
    back OUT_PIECE at a time: pieces that small are recycled by malloc from its heap,
    so gigabytes pass through the same few pages (fresh megabyte-sized buffers were
    mapped and unmapped per chunk: ~900k page faults per GB). members[0] counts members.
    Raise VerifyError when the data is damaged or ends before a member does.
    """
    inflater, started = inflating.decompressobj(wbits=31), False
    members[0] = 1
    for chunk in chunks:
        if not started:
            _gzip_magic(chunk)
        started = True
        for start in range(0, len(chunk), IN_PIECE):
            data = chunk[start:start + IN_PIECE]
            while data:
                if inflater.eof:
                    # A finished decompressor keeps appending what it is fed to unused_data:
                    # zero padding (tape blocks) is skipped here so memory stays bounded.
                    if not bytes(data).strip(b"\0"):
                        break
                    inflater = inflating.decompressobj(wbits=31)  # another member follows (concatenated gzip)
                    members[0] += 1
                    _gzip_magic(data)
                try:
                    out = inflater.decompress(data, OUT_PIECE)
                    while True:
                        if out:
                            yield out
                        if not inflater.unconsumed_tail:
                            break
                        if clock() > deadline:
                            raise VerifyTimeout()
                        out = inflater.decompress(inflater.unconsumed_tail, OUT_PIECE)
                except (zlib.error, inflating.error) as exc:
                    raise VerifyError(f"corrupt gzip data ({_zlib_reason(exc)})") from None
                data = inflater.unused_data if inflater.eof else b""
    if not started:
        raise VerifyError("empty file, not gzip data")
    if not inflater.eof:
        raise VerifyError("truncated gzip file (ends before the end of the stream)")


def _gzip_magic(data) -> None:
    """A gzip member starts with 1f 8b: said at once, not after waiting for more data."""
    head = bytes(data[:2])
    if head != b"\x1f\x8b"[:len(head)]:
        raise VerifyError("corrupt gzip data (not gzip data)")


def _zlib_reason(exc) -> str:
    """zlib's and ISA-L's words for the same damage, said one way."""
    text = str(exc)
    if "incorrect data check" in text or "incorrect length check" in text or "Incorrect checksum" in text:
        return "CRC error"
    if "incorrect header check" in text or "Invalid gzip/zlib wrapper" in text:
        return "not gzip data"
    if "Invalid deflate block" in text:
        return "invalid compressed data"
    return text.replace("Error -3 while decompressing data: ", "")


@contextlib.contextmanager
def _damage_as_verdict(kind: str, os_error: str = "truncated or corrupt"):
    """What a damaged archive makes its reader raise becomes a VerifyError naming `kind`.

    An OSError with an errno (EIO, the file vanished) is no verdict on the file and
    goes up as it is; one without (gzip's BadGzipFile) is damage like the rest.
    """
    try:
        yield
    except (VerifyError, VerifyTimeout):
        raise
    except OSError as exc:
        if exc.errno is not None:
            raise
        raise VerifyError(f"{os_error} {kind} archive: {exc}") from None
    except Exception as exc:  # tarfile, struct, zlib, bz2 and lzma each raise their own on damage
        raise VerifyError(f"truncated or corrupt {kind} archive: {exc or type(exc).__name__}") from None


def verify_tar(path: str, deadline: float, clock=time.monotonic) -> str:
    """Read every member header and skip through its data to the end (any compression).

    tarfile reads the headers from `tarstream.Forward`, which decompresses the file itself in
    reused buffers (tarfile's own stream mode allocates per block and never checks
    the gzip CRC); after the end-of-archive blocks the rest is read to the last byte.
    """
    import tarfile

    from monitor.checks.tarstream import Forward, decompressed

    stop = []  # why tarfile stopped reading headers

    class Header(tarfile.TarInfo):
        # tarfile ends the listing quietly on a header it cannot read past the first
        # (a file cut before a header, a damaged header): only zero blocks are an end.
        @classmethod
        def fromtarfile(cls, archive):
            try:
                return super().fromtarfile(archive)
            except tarfile.HeaderError as exc:
                stop.append(exc)
                raise

    count = 0
    with _damage_as_verdict("tar", os_error="corrupt"):
        stream = Forward(decompressed(path, deadline, clock))
        with tarfile.open(fileobj=stream, mode="r:", tarinfo=Header) as archive:
            while archive.next() is not None:
                count += 1
                archive.members.clear()  # tarfile keeps every header read: 1M entries, 500 MB
        stream.drain()  # the compressed stream's own end and CRC
    if not count:
        raise VerifyError("tar archive has no members")
    if stop and not isinstance(stop[-1], tarfile.EOFHeaderError):
        what = "damaged header" if isinstance(stop[-1], tarfile.InvalidHeaderError) else "end of file"
        raise VerifyError(f"truncated or corrupt tar archive: {what} after {count} members, "
                          "before the end-of-archive blocks")
    return f"tar ok ({count} members read)"


def verify_zip(path: str, deadline: float, clock=time.monotonic) -> str:
    """Check the CRC and size of every member, streaming the central directory.

    zipfile.ZipFile builds an object per entry before reading any (540 MB for a
    1M-entry archive): here one central directory record is read at a time from
    its own handle, its member inflated in bounded pieces from another, so memory
    stays flat whatever the number of entries.
    """
    import zipfile

    with _damage_as_verdict("zip"):
        with open(path, "rb") as directory, open(path, "rb") as members:
            try:
                end = zipfile._EndRecData(directory)
            except OSError:  # a seek before the start: shorter than an end record
                end = None
            if not end:
                raise VerifyError("bad zip archive: File is not a zip file")
            size_cd, offset_cd = end[zipfile._ECD_SIZE], end[zipfile._ECD_OFFSET]
            concat = end[zipfile._ECD_LOCATION] - size_cd - offset_cd  # bytes prepended (sfx)
            if end[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:
                concat -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator
            if concat < 0 or offset_cd < 0:
                raise VerifyError("bad zip archive: central directory offset is wrong")
            directory.seek(offset_cd + concat)
            count, done = 0, 0
            while done < size_cd:
                if clock() > deadline:
                    raise VerifyTimeout()
                entry = _zip_entry(directory)
                done += entry.pop("record_size")
                _verify_zip_member(members, entry, concat, deadline, clock)
                count += 1
    return f"zip ok ({count} members, CRC checked)"



def _zip_entry(directory) -> dict:
    """Read the next central directory record: name, method, flags, CRC, sizes, offset."""
    import zipfile

    fixed = directory.read(zipfile.sizeCentralDir)
    if len(fixed) != zipfile.sizeCentralDir:
        raise VerifyError("bad zip archive: truncated central directory")
    rec = struct.unpack(zipfile.structCentralDir, fixed)
    if rec[zipfile._CD_SIGNATURE] != zipfile.stringCentralDir:
        raise VerifyError("bad zip archive: Bad magic number for central directory")
    lengths = (rec[zipfile._CD_FILENAME_LENGTH], rec[zipfile._CD_EXTRA_FIELD_LENGTH],
               rec[zipfile._CD_COMMENT_LENGTH])
    rest = directory.read(sum(lengths))
    if len(rest) != sum(lengths):
        raise VerifyError("bad zip archive: truncated central directory")
    flags = rec[zipfile._CD_FLAG_BITS]
    raw_name = rest[:lengths[0]]
    name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", "replace")
    entry = {"name": name, "flags": flags, "method": rec[zipfile._CD_COMPRESS_TYPE],
             "crc": rec[zipfile._CD_CRC], "compress_size": rec[zipfile._CD_COMPRESSED_SIZE],
             "file_size": rec[zipfile._CD_UNCOMPRESSED_SIZE], "offset": rec[zipfile._CD_LOCAL_HEADER_OFFSET],
             "record_size": zipfile.sizeCentralDir + sum(lengths)}
    extra = rest[lengths[0]:lengths[0] + lengths[1]]
    while len(extra) >= 4:  # ZIP64: the 32-bit fields that are all ones live in extra field 1
        kind, size = struct.unpack("<HH", extra[:4])
        if kind == 1:
            values = iter(struct.unpack(f"<{size // 8}Q", extra[4:4 + size - size % 8]))
            for key in ("file_size", "compress_size", "offset"):
                if entry[key] == 0xFFFFFFFF:
                    entry[key] = next(values, entry[key])
            break
        extra = extra[4 + size:]
    return entry


def _verify_zip_member(handle, entry: dict, concat: int, deadline: float, clock) -> None:
    """Inflate one member in bounded pieces; its CRC and size must match the directory."""
    import zipfile

    name = entry["name"]
    handle.seek(entry["offset"] + concat)
    fixed = handle.read(zipfile.sizeFileHeader)
    if len(fixed) != zipfile.sizeFileHeader:
        raise VerifyError(f"truncated or corrupt zip archive: {name!r} ends before its header")
    local = struct.unpack(zipfile.structFileHeader, fixed)
    if local[zipfile._FH_SIGNATURE] != zipfile.stringFileHeader:
        raise VerifyError(f"bad zip archive: Bad magic number for file header of {name!r}")
    if entry["flags"] & 0x1:
        raise VerifyError(f"{name!r} is encrypted: its CRC cannot be checked")
    handle.seek(local[zipfile._FH_FILENAME_LENGTH] + local[zipfile._FH_EXTRA_FIELD_LENGTH], os.SEEK_CUR)
    produced, crc = 0, 0
    for out in _zip_inflate(handle, entry["method"], entry["compress_size"], name, deadline, clock):
        produced += len(out)
        if produced > entry["file_size"]:  # a bomb stops here, not when memory runs out
            raise VerifyError(f"Bad CRC-32 for file {name!r} (more data than its size)")
        crc = zlib.crc32(out, crc)
    if produced != entry["file_size"] or crc != entry["crc"]:
        raise VerifyError(f"Bad CRC-32 for file {name!r}")


def _zip_inflate(handle, method: int, left: int, name: str, deadline: float, clock):
    """Yield a member's data in pieces of at most MAX_INFLATE bytes."""
    import zipfile

    def compressed(size):
        nonlocal left
        size = min(size, left)
        data = handle.read(size)
        if len(data) != size:
            raise VerifyError(f"truncated or corrupt zip archive: {name!r} ends early")
        left -= size
        return data

    def pieces():
        while left:
            if clock() > deadline:
                raise VerifyTimeout()
            yield compressed(CHUNK)

    if method == zipfile.ZIP_STORED:
        yield from pieces()
        return
    if method == zipfile.ZIP_DEFLATED:
        inflater = zlib.decompressobj(-15)
        for data in pieces():
            while data:
                yield inflater.decompress(data, MAX_INFLATE)
                data = inflater.unconsumed_tail
                if clock() > deadline:
                    raise VerifyTimeout()
        yield inflater.flush()
        done = inflater.eof
    elif method in (zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        if method == zipfile.ZIP_BZIP2:
            import bz2

            inflater = bz2.BZ2Decompressor()
        else:
            import lzma

            head = compressed(4)  # version (2 bytes), properties size (2), properties
            if len(head) != 4:
                raise VerifyError(f"truncated or corrupt zip archive: {name!r} ends early")
            props = compressed(struct.unpack("<H", head[2:])[0])
            inflater = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[
                lzma._decode_filter_properties(lzma.FILTER_LZMA1, props)])
        for data in pieces():
            yield inflater.decompress(data, MAX_INFLATE)
            while not inflater.needs_input and not inflater.eof:
                if clock() > deadline:
                    raise VerifyTimeout()
                yield inflater.decompress(b"", MAX_INFLATE)
            if inflater.eof:
                break
        done = inflater.eof
    else:
        raise VerifyError(f"{name!r} uses compression method {method}, which cannot be checked")
    if not done:
        raise VerifyError(f"truncated or corrupt zip archive: {name!r} ends before its compressed stream")


def verify_sha256(path: str, deadline: float, clock=time.monotonic) -> str:
    """Compare the file's SHA-256 with FILE.sha256 beside it (sha256sum format)."""
    sidecar = path + ".sha256"
    name = os.path.basename(sidecar)
    try:
        # O_NONBLOCK: opening a FIFO named like the sidecar must not wait for a writer.
        fd = os.open(sidecar, os.O_RDONLY | os.O_NONBLOCK)
        with open(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise VerifyError(f"sidecar {name} is not a regular file")
            expected = handle.read(4096).split()[0].decode("ascii").lower()
    except FileNotFoundError:
        raise VerifyError(f"sidecar {name} is missing") from None
    except (IndexError, UnicodeDecodeError):
        raise VerifyError(f"sidecar {name} holds no digest") from None
    except OSError as exc:
        raise VerifyError(f"sidecar {name} is unreadable: {exc.strerror}") from None
    digest = hashlib.sha256()
    for chunk in _reader(path, deadline, clock):
        digest.update(chunk)
    if digest.hexdigest() != expected:
        raise VerifyError(f"SHA-256 mismatch (file {digest.hexdigest()[:12]}…, sidecar {expected[:12]}…)")
    return "sha256 matches sidecar"



VERIFIERS = {"gzip": verify_gzip, "tar": verify_tar, "zip": verify_zip, "sha256": verify_sha256}
