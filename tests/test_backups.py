"""Backup checks on real files made in tmp_path: listing, judging, streaming verification,
the verify cache, the per-set timeout, and `monitor backup-check` end to end."""

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
import tracemalloc
import zipfile
import zlib
from hashlib import sha256
from itertools import count
from pathlib import Path
from types import SimpleNamespace

import pytest

from monitor import config
from monitor.checks import archives, backup_checks, backups
from monitor.state import Carried as Counters
from monitor.results import CRITICAL, OK, UNKNOWN, WARNING
from monitor.runner import run_checks
from tests.conftest import monitor_json

T0 = 1_800_000_000.0  # the newest dump's mtime in tests that fix the clock
ROOMY = SimpleNamespace(f_bavail=50, f_blocks=100)  # 50% free: the disk never decides


def backup_set(folder, **entry) -> dict:
    """A `[[backups]]` entry as the config loader returns it (relative paths from `folder`)."""
    raw = {"name": "db", "path": "b/*", **entry}
    return config.build({"backups": [raw]}, None, str(folder))["backups"][0]


def judge(cfg, cache=None, statvfs=lambda path: ROOMY, **kwargs):
    return backups.backup(cfg, cache if cache is not None else Counters(), statvfs=statvfs, **kwargs)


def put(path, data: bytes, mtime: float | None = None) -> Path:
    """Write `data` to `path` (folders made) and set its mtime; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def flip(path, offset: int) -> None:
    data = bytearray(Path(path).read_bytes())
    data[offset] ^= 0xFF
    Path(path).write_bytes(bytes(data))


def cut(path, keep: int) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(keep)


def tar_bytes(mode="w", sizes=(5000, 3000, 100)) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for i, size in enumerate(sizes):
            info = tarfile.TarInfo(f"member-{i}")
            info.size = size
            archive.addfile(info, io.BytesIO(os.urandom(size)))
    return buffer.getvalue()


def sha256_line(data: bytes, name: str) -> str:
    return f"{sha256(data).hexdigest()}  {name}\n"


def within(seconds: float, work):
    """Run `work` in a thread; fail the test (instead of hanging it) if it does not return in time."""
    box = []
    thread = threading.Thread(target=lambda: box.append(work()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    return box[0]


class Spy:
    """Counts calls to a verifier and lets the real one do the work."""

    def __init__(self, monkeypatch, method="gzip"):
        self.calls = 0
        self.real = backups.VERIFIERS[method]
        monkeypatch.setitem(backups.VERIFIERS, method, self)

    def __call__(self, *args):
        self.calls += 1
        return self.real(*args)


def rerun(cache: Counters) -> Counters:
    """The cache the next run starts from, as run_job carries it (only entries touched)."""
    return Counters(json.loads(json.dumps(cache.updates)))


# --- a good set ------------------------------------------------------------------------

def test_fresh_whole_set_is_ok_with_newest_age_size_previous_count_and_verify_details(tmp_path):
    put(tmp_path / "b/db-1.sql.gz", gzip.compress(b"a" * 5000), T0 - 86400)
    newest = put(tmp_path / "b/db-2.sql.gz", gzip.compress(os.urandom(3000)), T0)
    result = judge(backup_set(tmp_path, verify="gzip"), now=lambda: T0 + 3600)
    assert result.status == OK, result.message
    assert (result.value, result.unit, result.critical) == (3600, "s", 26 * 3600)
    d = result.details
    assert d["newest"] == str(newest)
    assert d["age_seconds"] == 3600
    assert d["size_bytes"] == newest.stat().st_size
    assert d["previous_size_bytes"] == (tmp_path / "b/db-1.sql.gz").stat().st_size
    assert d["count"] == 2
    assert d["verify"]["method"] == "gzip" and d["verify"]["ok"] is True
    assert d["verify"]["result"] == "gzip ok (1 member, CRC checked)" and d["verify"]["cached"] is False
    assert d["verify"]["verified_at"].startswith("2027-01-15T")  # T0 + 1 h, an ISO time with offset
    assert result.message.startswith("ok: db-2.sql.gz, ") and "gzip ok" in result.message


def test_only_the_newest_by_mtime_is_judged_whatever_the_names(tmp_path):
    put(tmp_path / "b/z-old.gz", b"", T0 - 10 * 86400)  # empty and stale, but not the newest
    put(tmp_path / "b/a-new.gz", gzip.compress(b"dump"), T0)
    result = judge(backup_set(tmp_path, verify="gzip"), now=lambda: T0 + 60)
    assert result.status == OK, result.message
    assert result.details["newest"].endswith("a-new.gz")


# --- age, size, shrink, retention, free space -------------------------------------------

def test_newest_older_than_max_age_is_critical_naming_its_age_and_max_age(tmp_path):
    put(tmp_path / "b/db.sql", b"x" * 100, time.time() - 30 * 3600)
    result = judge(backup_set(tmp_path, max_age="26h"))
    assert result.status == CRITICAL
    assert "newest is 1d6h old (max 26h)" in result.message
    assert 30 * 3600 <= result.value < 30 * 3600 + 60


def test_empty_newest_is_critical(tmp_path):
    put(tmp_path / "b/db.sql", b"")
    result = judge(backup_set(tmp_path))
    assert result.status == CRITICAL
    assert "newest is empty (0 bytes)" in result.message


def test_newest_below_min_size_is_critical(tmp_path):
    put(tmp_path / "b/db.sql", b"x" * 500)
    result = judge(backup_set(tmp_path, min_size="1KB"))
    assert result.status == CRITICAL
    assert "newest is 500 B, below 1KB" in result.message


def shrunk_set(tmp_path, previous: int, newest: int, limit: float) -> dict:
    put(tmp_path / "b/db-1.sql", b"x" * previous, T0 - 86400)
    put(tmp_path / "b/db-2.sql", b"x" * newest, T0)
    return backup_set(tmp_path, max_shrink_percent=limit)


def test_shrinking_past_max_shrink_percent_is_a_warning_with_both_sizes(tmp_path):
    result = judge(shrunk_set(tmp_path, 10_000, 7_000, 25), now=lambda: T0)
    assert result.status == WARNING, result.message
    assert (result.details["previous_size_bytes"], result.details["size_bytes"]) == (10_000, 7_000)
    assert result.details["shrink_percent"] == 30.0
    assert "newest shrank 30% (9.8 KiB → 6.8 KiB)" in result.message


def test_shrinking_past_twice_max_shrink_percent_is_critical(tmp_path):
    result = judge(shrunk_set(tmp_path, 10_000, 2_000, 25), now=lambda: T0)
    assert result.status == CRITICAL, result.message
    assert "newest shrank 80%" in result.message
    assert (result.details["previous_size_bytes"], result.details["size_bytes"]) == (10_000, 2_000)


def test_shrinking_within_the_limit_is_ok(tmp_path):
    result = judge(shrunk_set(tmp_path, 10_000, 8_000, 25), now=lambda: T0)
    assert result.status == OK, result.message


def test_fewer_files_than_min_count_is_a_warning_that_retention_is_broken(tmp_path):
    put(tmp_path / "b/db-1.sql", b"x" * 100, T0 - 86400)
    put(tmp_path / "b/db-2.sql", b"x" * 100, T0)
    result = judge(backup_set(tmp_path, min_count=3), now=lambda: T0)
    assert result.status == WARNING
    assert "2 file(s), fewer than min_count 3 (retention broken?)" in result.message


@pytest.mark.parametrize("available, status", [(8, WARNING), (4, CRITICAL), (10, OK)])
def test_free_space_below_min_free_percent_is_a_warning_and_below_half_of_it_critical(
        tmp_path, available, status):
    put(tmp_path / "b/db.sql", b"x" * 100)
    asked = []

    def statvfs(path):
        asked.append(path)
        return SimpleNamespace(f_bavail=available, f_blocks=100)

    result = judge(backup_set(tmp_path, min_free_percent=10), statvfs=statvfs)
    assert result.status == status, result.message
    assert asked == [str(tmp_path / "b")]
    assert result.details["free_percent"] == available
    if status != OK:
        assert f"{available:.1f}% free where the backups live" in result.message


def test_free_space_that_cannot_be_measured_is_unknown(tmp_path):
    put(tmp_path / "b/db.sql", b"x" * 100)

    def statvfs(path):
        raise OSError(5, "Input/output error")

    result = judge(backup_set(tmp_path), statvfs=statvfs)
    assert result.status == UNKNOWN
    assert "cannot measure free space: Input/output error" in result.message


# --- gzip ----------------------------------------------------------------------------

def gzip_set(tmp_path, data: bytes, name="db.sql.gz", **entry):
    put(tmp_path / "b" / name, data)
    return backup_set(tmp_path, verify="gzip", **entry)


def test_whole_gzip_is_ok(tmp_path):
    result = judge(gzip_set(tmp_path, gzip.compress(os.urandom(100_000))))
    assert result.status == OK, result.message
    assert result.details["verify"]["result"] == "gzip ok (1 member, CRC checked)"


def test_truncated_gzip_is_critical_saying_truncated(tmp_path):
    cfg = gzip_set(tmp_path, gzip.compress(os.urandom(100_000)))
    cut(tmp_path / "b/db.sql.gz", 50_000)
    result = judge(cfg)
    assert result.status == CRITICAL
    assert "verification failed: truncated gzip file" in result.message
    assert result.details["verify"]["ok"] is False


def test_gzip_with_a_flipped_byte_is_critical_with_a_crc_error(tmp_path):
    # Stored (level 0) deflate blocks: the flipped byte is data, so only the CRC can tell.
    cfg = gzip_set(tmp_path, gzip.compress(os.urandom(100_000), compresslevel=0))
    flip(tmp_path / "b/db.sql.gz", 50_000)
    result = judge(cfg)
    assert result.status == CRITICAL
    assert "verification failed: corrupt gzip data (CRC error)" in result.message


def test_gzip_with_damaged_deflate_data_is_critical(tmp_path):
    cfg = gzip_set(tmp_path, gzip.compress(b"".join(b"row %d\n" % i for i in range(50_000))))
    flip(tmp_path / "b/db.sql.gz", 1000)
    result = judge(cfg)
    assert result.status == CRITICAL
    assert "verification failed: corrupt gzip data" in result.message


def test_concatenated_gzip_members_are_ok(tmp_path):
    data = gzip.compress(b"first dump\n") + gzip.compress(b"second dump\n") + gzip.compress(b"third\n")
    result = judge(gzip_set(tmp_path, data))
    assert result.status == OK, result.message
    assert result.details["verify"]["result"] == "gzip ok (3 members, CRC checked)"


def test_a_gzip_member_ending_exactly_on_a_read_chunk_is_followed_into_the_next(tmp_path):
    payload = os.urandom(archives.CHUNK)
    first = next(m for n in range(archives.CHUNK - 200, archives.CHUNK)
                 if len(m := gzip.compress(payload[:n], compresslevel=0, mtime=0)) == archives.CHUNK)
    result = judge(gzip_set(tmp_path, first + gzip.compress(b"tail", mtime=0)))
    assert result.status == OK, result.message
    assert "2 members" in result.details["verify"]["result"]
    cut(tmp_path / "b/db.sql.gz", archives.CHUNK + 10)  # the second member, cut
    assert "truncated" in judge(backup_set(tmp_path, verify="gzip")).message


def test_gzip_followed_by_garbage_is_critical(tmp_path):
    result = judge(gzip_set(tmp_path, gzip.compress(b"dump") + b"garbage"))
    assert result.status == CRITICAL
    assert "not gzip data" in result.message


def test_a_file_that_is_not_gzip_is_critical(tmp_path):
    result = judge(gzip_set(tmp_path, b"plain SQL, not compressed\n" * 10))
    assert result.status == CRITICAL
    assert "corrupt gzip data (not gzip data)" in result.message


def judged_with_peak(cfg: dict):
    """The backup check's Result and the peak of Python memory it allocated."""
    tracemalloc.start()
    try:
        result = judge(cfg)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_200_mb_gzip_of_zeros_verifies_in_bounded_memory(tmp_path):
    path = tmp_path / "b/bomb.gz"
    path.parent.mkdir()
    packer, zeros = zlib.compressobj(1, zlib.DEFLATED, 31), bytes(1 << 20)
    with open(path, "wb") as handle:
        for _ in range(200):
            handle.write(packer.compress(zeros))
        handle.write(packer.flush())
    result, peak = judged_with_peak(backup_set(tmp_path, verify="gzip"))
    assert result.status == OK, result.message
    assert peak < 20 << 20, f"peak {peak / 2**20:.1f} MiB"


def test_zero_padding_after_the_last_gzip_member_is_ok_and_not_held_in_memory(tmp_path):
    path = put(tmp_path / "b/db.sql.gz", gzip.compress(b"dump"))
    with open(path, "r+b") as handle:
        handle.truncate(64 << 20)  # 64 MiB of zero blocks (sparse), as a tape writer pads
    result, peak = judged_with_peak(backup_set(tmp_path, verify="gzip"))
    assert result.status == OK, result.message
    assert peak < 20 << 20, f"peak {peak / 2**20:.1f} MiB"


# --- tar -----------------------------------------------------------------------------

@pytest.mark.parametrize("name, mode", [("site.tar.gz", "w:gz"), ("site.tar", "w"), ("site.tar.xz", "w:xz"),
                                        ("site.tar.bz2", "w:bz2")])
def test_whole_tar_archives_are_ok_whatever_the_compression(tmp_path, name, mode):
    put(tmp_path / "b" / name, tar_bytes(mode))
    result = judge(backup_set(tmp_path, verify="tar"))
    assert result.status == OK, result.message
    assert result.details["verify"]["result"] == "tar ok (3 members read)"


def test_tar_gz_with_a_truncated_member_is_critical(tmp_path):
    put(tmp_path / "b/site.tar.gz", tar_bytes("w:gz", sizes=(200_000, 100)))
    cut(tmp_path / "b/site.tar.gz", 100_000)
    result = judge(backup_set(tmp_path, verify="tar"))
    assert result.status == CRITICAL
    assert "verification failed: truncated or corrupt tar archive" in result.message


def test_plain_tar_cut_inside_a_member_is_critical(tmp_path):
    put(tmp_path / "b/site.tar", tar_bytes())
    cut(tmp_path / "b/site.tar", 4000)
    result = judge(backup_set(tmp_path, verify="tar"))
    assert result.status == CRITICAL
    assert "truncated or corrupt tar archive" in result.message


@pytest.mark.parametrize("keep", [512 + 5120, 512 + 5120 + 512 + 3072, 512 + 5120 + 100])
def test_plain_tar_cut_at_or_inside_a_member_header_is_critical(tmp_path, keep):
    # tarfile and `tar -t` both list such a file without complaint: the end-of-archive
    # zero blocks are missing, and that is what gives the truncation away.
    put(tmp_path / "b/site.tar", tar_bytes())
    cut(tmp_path / "b/site.tar", keep)
    result = judge(backup_set(tmp_path, verify="tar"))
    assert result.status == CRITICAL, result.message
    assert "before the end-of-archive blocks" in result.message


def test_tar_with_a_damaged_member_header_in_the_middle_is_critical(tmp_path):
    put(tmp_path / "b/site.tar", tar_bytes())
    flip(tmp_path / "b/site.tar", 512 + 5120 + 150)  # the second header's checksum
    result = judge(backup_set(tmp_path, verify="tar"))
    assert result.status == CRITICAL, result.message
    assert "damaged header after 1 members" in result.message


def test_a_file_that_is_not_a_tar_archive_is_critical(tmp_path):
    put(tmp_path / "b/site.tar", b"this is not a tar archive\n" * 100)
    result = judge(backup_set(tmp_path, verify="tar"))
    assert result.status == CRITICAL
    assert "verification failed: truncated or corrupt tar archive" in result.message



@pytest.mark.parametrize("damage", ["crc", "cut"])
def test_a_tar_gz_whose_gzip_trailer_is_damaged_is_critical_although_every_header_reads(tmp_path, damage):
    # tarfile stops at the end-of-archive blocks and never checked the gzip CRC behind them.
    path = put(tmp_path / "b/site.tar.gz", tar_bytes("w:gz"))
    size = path.stat().st_size
    flip(path, size - 8) if damage == "crc" else cut(path, size - 4)
    result = judge(backup_set(tmp_path, verify="tar"))
    assert result.status == CRITICAL, result.message
    expected = "CRC error" if damage == "crc" else "truncated gzip file"
    assert "verification failed: truncated or corrupt tar archive" in result.message and expected in result.message


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz", "w"])
def test_a_tar_with_a_100_mb_member_of_zeros_verifies_in_bounded_memory(tmp_path, mode):
    path = tmp_path / "b/site.tar"
    path.parent.mkdir()
    with tarfile.open(path, mode) as archive:
        info = tarfile.TarInfo("zeros")
        info.size = 100 << 20
        archive.addfile(info, io.BufferedReader(io.BytesIO(bytes(info.size))))
        archive.addfile(tarfile.TarInfo("empty"))
    result, peak = judged_with_peak(backup_set(tmp_path, verify="tar"))
    assert result.status == OK, result.message
    assert result.details["verify"]["result"] == "tar ok (2 members read)"
    assert peak < 20 << 20, f"peak {peak / 2**20:.1f} MiB"



@pytest.mark.parametrize("name, mode", [("site.tar.bz2", "w:bz2"), ("site.tar.xz", "w:xz")])
@pytest.mark.parametrize("damage", ["cut", "flip", "trailer"])
def test_a_damaged_bz2_or_xz_tar_is_critical(tmp_path, name, mode, damage):
    path = put(tmp_path / "b" / name, tar_bytes(mode, sizes=(200_000, 100)))
    size = path.stat().st_size
    {"cut": lambda: cut(path, size // 2), "flip": lambda: flip(path, size // 2),
     "trailer": lambda: cut(path, size - 2)}[damage]()
    result = judge(backup_set(tmp_path, verify="tar"))
    assert result.status == CRITICAL, result.message
    assert "verification failed: truncated or corrupt tar archive" in result.message


def test_concatenated_gzip_members_of_a_tar_gz_are_followed(tmp_path):
    whole = tar_bytes("w")
    put(tmp_path / "b/site.tar.gz", gzip.compress(whole[:3000]) + gzip.compress(whole[3000:]))
    result = judge(backup_set(tmp_path, verify="tar"))
    assert result.status == OK, result.message
    assert result.details["verify"]["result"] == "tar ok (3 members read)"


# --- zip -----------------------------------------------------------------------------

MARKER = b"stored-member-data:" + b"0123456789" * 100


def zip_set(tmp_path) -> tuple[dict, Path]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", MARKER, compress_type=zipfile.ZIP_STORED)
        archive.writestr("dump.sql", b"insert into t values (1);\n" * 1000, compress_type=zipfile.ZIP_DEFLATED)
    path = put(tmp_path / "b/site.zip", buffer.getvalue())
    return backup_set(tmp_path, verify="zip"), path


def test_whole_zip_is_ok(tmp_path):
    cfg, _ = zip_set(tmp_path)
    result = judge(cfg)
    assert result.status == OK, result.message
    assert result.details["verify"]["result"] == "zip ok (2 members, CRC checked)"


def test_zip_with_a_flipped_byte_in_a_stored_member_is_critical_with_a_bad_crc(tmp_path):
    cfg, path = zip_set(tmp_path)
    flip(path, path.read_bytes().index(MARKER) + 500)
    result = judge(cfg)
    assert result.status == CRITICAL
    assert "Bad CRC-32 for file 'notes.txt'" in result.message


def test_truncated_zip_is_critical(tmp_path):
    cfg, path = zip_set(tmp_path)
    cut(path, path.stat().st_size // 2)
    result = judge(cfg)
    assert result.status == CRITICAL
    assert "verification failed: bad zip archive" in result.message


def many_entry_zip(path: Path, entries: int) -> None:
    """A zip of `entries` stored empty members, crafted in one go (zipfile takes 10× longer)."""
    import struct

    header, record = struct.Struct(zipfile.structFileHeader), struct.Struct(zipfile.structCentralDir)
    local, central, offset = [], [], 0
    for i in range(entries):
        name = b"%07d" % i
        local.append(header.pack(zipfile.stringFileHeader, 20, 0, 0, 0, 0, 0x21, 0, 0, 0, len(name), 0) + name)
        central.append(record.pack(zipfile.stringCentralDir, 20, 3, 20, 0, 0, 0, 0, 0x21, 0, 0, 0,
                                   len(name), 0, 0, 0, 0, 0, offset) + name)
        offset += header.size + len(name)
    directory = b"".join(central)
    end = struct.pack(zipfile.structEndArchive, zipfile.stringEndArchive, 0, 0, 0xFFFF, 0xFFFF,
                      len(directory), offset, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(local) + directory + end)


def many_entry_tar(path: Path, entries: int) -> None:
    """A tar of `entries` empty files: one ustar header each, only name and checksum differ."""
    base = bytearray(tarfile.TarInfo("0000000").tobuf(format=tarfile.USTAR_FORMAT))
    base[148:156] = b" " * 8  # the checksum counts its own field as spaces
    unnamed = sum(base) - sum(b"0000000")
    blocks = []
    for i in range(entries):
        name = b"%07d" % i
        base[0:7] = name
        base[148:156] = b"%06o\0 " % (unnamed + sum(name))
        blocks.append(bytes(base))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(blocks) + b"\0" * 1024)


def backup_check_peak(tmp_path, pattern: str, verify: str) -> tuple[dict, int]:
    """Run `monitor backup-check` on one set; return its check and its peak RSS in KB."""
    from tests.conftest import MONITOR, clean_env

    (tmp_path / "test.toml").write_text(f'[[backups]]\nname = "site"\npath = "{pattern}"\n'
                                        f'verify = "{verify}"\nmin_free_percent = 0\n')
    # A process's peak RSS starts at its parent's size when it forked, so pytest (large)
    # starts a small Python that starts monitor and reports monitor's peak (os.wait4).
    launcher = ("import json, os, subprocess, sys\n"
                "child = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)\n"
                "out = child.stdout.read()\n"
                "_, status, usage = os.wait4(child.pid, 0)\n"
                "print(json.dumps({'out': out.decode(), 'peak_kb': usage.ru_maxrss}))\n")
    proc = subprocess.run([sys.executable, "-c", launcher, MONITOR, "backup-check", "--format", "json",
                           "--config", "test.toml"], cwd=tmp_path, env=clean_env(), capture_output=True,
                          text=True, timeout=60)
    report = json.loads(proc.stdout)
    return monitor_json(report["out"])["checks"]["backup:site"], report["peak_kb"]  # ru_maxrss: KB on Linux


def test_a_zip_with_200k_entries_verifies_within_64_mb(tmp_path):
    # zipfile.ZipFile holds an object per entry: 124 MB for these 200k, 540 MB for 1M.
    many_entry_zip(tmp_path / "b/site.zip", 200_000)
    check, peak_kb = backup_check_peak(tmp_path, "b/*.zip", "zip")
    assert check["details"]["verify"]["result"] == "zip ok (200000 members, CRC checked)", check
    assert peak_kb < 64 * 1024, f"peak RSS {peak_kb} KB"


def test_a_tar_with_120k_entries_verifies_within_64_mb(tmp_path):
    # tarfile keeps every header it read: 66 MB for 100k entries, ~500 MB for 1M.
    many_entry_tar(tmp_path / "b/site.tar", 120_000)
    check, peak_kb = backup_check_peak(tmp_path, "b/*.tar", "tar")
    assert check["details"]["verify"]["result"] == "tar ok (120000 members read)", check
    assert peak_kb < 64 * 1024, f"peak RSS {peak_kb} KB"


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                                    zipfile.ZIP_LZMA])
def test_every_zip_compression_method_is_inflated_and_crc_checked(tmp_path, method):
    data = b"".join(b"row %d\n" % i for i in range(200_000))  # 1.5 MB: several pieces
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        archive.writestr("dump.sql", data)
        archive.writestr("empty", b"")
    path = put(tmp_path / "b/site.zip", buffer.getvalue())
    cfg = backup_set(tmp_path, verify="zip")
    assert judge(cfg).details["verify"]["result"] == "zip ok (2 members, CRC checked)"
    flip(path, len(buffer.getvalue()) // 2)
    result = judge(cfg)
    assert result.status == CRITICAL, result.message
    assert "verification failed: " in result.message


def test_a_zip_member_longer_than_its_directory_size_stops_there(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb", b"\0" * (50 << 20))
    raw = bytearray(buffer.getvalue())
    directory = raw.rindex(zipfile.stringCentralDir)
    raw[directory + 24:directory + 28] = (1000).to_bytes(4, "little")  # claims 1000 bytes inflated
    put(tmp_path / "b/site.zip", bytes(raw))
    result = judge(backup_set(tmp_path, verify="zip"))
    assert result.status == CRITICAL
    assert "Bad CRC-32 for file 'bomb' (more data than its size)" in result.message


# --- sha256 --------------------------------------------------------------------------

def sha256_set(tmp_path, sidecar: str | None, data=b"pg_dump output\n" * 1000):
    put(tmp_path / "b/db.dump", data)
    if sidecar is not None:
        put(tmp_path / "b/db.dump.sha256", sidecar.encode())
    return backup_set(tmp_path, path="b/*.dump", verify="sha256")


def test_file_matching_its_sha256_sidecar_is_ok(tmp_path):
    data = os.urandom(3 * archives.CHUNK + 5)
    result = judge(sha256_set(tmp_path, sha256_line(data, "db.dump"), data))
    assert result.status == OK, result.message
    assert result.details["verify"]["result"] == "sha256 matches sidecar"


def test_sha256_mismatch_is_critical(tmp_path):
    result = judge(sha256_set(tmp_path, sha256_line(b"another file", "db.dump")))
    assert result.status == CRITICAL
    assert "verification failed: SHA-256 mismatch" in result.message


def test_missing_sha256_sidecar_is_critical_saying_missing(tmp_path):
    result = judge(sha256_set(tmp_path, None))
    assert result.status == CRITICAL
    assert "sidecar db.dump.sha256 is missing" in result.message


def test_empty_sha256_sidecar_is_critical(tmp_path):
    result = judge(sha256_set(tmp_path, ""))
    assert result.status == CRITICAL
    assert "sidecar db.dump.sha256 holds no digest" in result.message


def test_a_fifo_named_like_the_sidecar_is_critical_and_never_waits_for_a_writer(tmp_path):
    cfg = sha256_set(tmp_path, None)
    os.mkfifo(tmp_path / "b/db.dump.sha256")
    result = within(5, lambda: judge(cfg))
    assert result.status == CRITICAL
    assert "sidecar db.dump.sha256 is not a regular file" in result.message


def test_a_glob_that_also_catches_the_sidecars_judges_the_dumps(tmp_path):
    # The sidecar is written after its dump, so it is the newest match of "db-*".
    data = b"dump\n" * 1000
    put(tmp_path / "b/db-1", data, T0)
    put(tmp_path / "b/db-1.sha256", sha256_line(data, "db-1").encode(), T0 + 5)
    result = judge(backup_set(tmp_path, path="b/db-*", verify="sha256", min_size="1KB"), now=lambda: T0 + 60)
    assert result.status == OK, result.message
    assert result.details["newest"].endswith("db-1") and result.details["count"] == 1


def test_a_sidecar_written_after_a_failed_check_is_read_on_the_next_run(tmp_path):
    data = b"dump\n" * 1000
    cfg = sha256_set(tmp_path, None, data)
    first = Counters()
    assert "is missing" in judge(cfg, first).message
    put(tmp_path / "b/db.dump.sha256", sha256_line(data, "db.dump").encode())
    result = judge(cfg, rerun(first))
    assert result.status == OK, result.message
    assert result.details["verify"]["cached"] is False


# --- what the glob finds -------------------------------------------------------------

def test_a_glob_matching_nothing_is_critical_naming_the_pattern(tmp_path):
    result = judge(backup_set(tmp_path, path="b/*.sql.gz"))
    assert result.status == CRITICAL
    assert result.message == f"no file matches {tmp_path}/b/*.sql.gz"
    assert result.value is None and result.details["count"] == 0


def test_a_glob_matching_only_a_directory_is_critical_saying_so(tmp_path):
    (tmp_path / "b/db.sql.gz").mkdir(parents=True)
    result = judge(backup_set(tmp_path, path="b/*.sql.gz"))
    assert result.status == CRITICAL
    assert result.message == (f"no regular file matches {tmp_path}/b/*.sql.gz "
                              f"({tmp_path}/b/db.sql.gz is a directory)")


def test_a_fifo_named_like_the_newest_backup_is_skipped_without_hanging(tmp_path):
    put(tmp_path / "b/db-1.sql.gz", gzip.compress(b"dump"), time.time() - 3600)
    os.mkfifo(tmp_path / "b/db-2.sql.gz")  # newer than the real dump
    result = within(5, lambda: judge(backup_set(tmp_path, verify="gzip")))
    assert result.status == OK, result.message
    assert result.details["newest"].endswith("db-1.sql.gz")
    assert result.details["skipped"] == [f"{tmp_path}/b/db-2.sql.gz is a FIFO"]


def test_a_fifo_alone_is_critical_and_never_read(tmp_path):
    (tmp_path / "b").mkdir()
    os.mkfifo(tmp_path / "b/db.sql.gz")
    result = within(5, lambda: judge(backup_set(tmp_path, verify="gzip")))
    assert result.status == CRITICAL
    assert "no regular file matches" in result.message and "db.sql.gz is a FIFO" in result.message


def test_a_broken_symlink_among_the_matches_is_critical_naming_it_while_other_sets_report(tmp_path):
    put(tmp_path / "b/db-1.sql", b"x" * 100)
    os.symlink(tmp_path / "gone.sql", tmp_path / "b/db-2.sql")
    put(tmp_path / "c/site.sql", b"x" * 100)
    cfg = config.build({"backups": [
        {"name": "db", "path": "b/*.sql", "min_free_percent": 0},
        {"name": "site", "path": "c/*.sql", "min_free_percent": 0},
    ]}, None, str(tmp_path))
    run = run_checks(backup_checks(cfg, Counters()))
    by_id = {r.id: r for r in run.results}
    assert by_id["backup:db"].status == CRITICAL
    assert by_id["backup:db"].message == f"unreadable: {tmp_path}/b/db-2.sql: broken symlink"
    assert by_id["backup:site"].status == OK, by_id["backup:site"].message


def test_a_file_listed_then_gone_before_its_stat_is_critical_naming_it(tmp_path, monkeypatch):
    put(tmp_path / "b/db-1.sql", b"x" * 100)
    listed = [str(tmp_path / "b/db-1.sql"), str(tmp_path / "b/db-2.sql")]
    monkeypatch.setattr(backups.glob, "glob", lambda pattern: listed)
    result = judge(backup_set(tmp_path))
    assert result.status == CRITICAL
    assert result.message == f"unreadable: {tmp_path}/b/db-2.sql: No such file or directory"


def test_a_newest_file_that_vanishes_before_it_is_read_is_critical_and_not_cached(tmp_path, monkeypatch):
    put(tmp_path / "b/db.sql.gz", gzip.compress(b"dump"))

    def rotated_away(path, *args):
        os.remove(path)  # a retention script pruning between the listing and the read
        return archives.verify_gzip(path, *args)

    monkeypatch.setitem(backups.VERIFIERS, "gzip", rotated_away)
    cache = Counters()
    result = judge(backup_set(tmp_path, verify="gzip"), cache)
    assert result.status == CRITICAL
    assert "unreadable: No such file or directory" in result.message
    assert "db.sql.gz" in result.message
    assert result.details["verify"]["ok"] is None
    assert cache.updates == {}


# --- the verify cache ----------------------------------------------------------------

def test_an_unchanged_file_is_not_read_again_and_is_reported_cached(tmp_path, monkeypatch):
    cfg = gzip_set(tmp_path, gzip.compress(b"dump" * 1000))
    spy = Spy(monkeypatch)
    first = Counters()
    one = judge(cfg, first)
    two = judge(cfg, rerun(first))
    assert spy.calls == 1
    assert one.details["verify"]["cached"] is False and two.details["verify"]["cached"] is True
    assert two.status == OK and two.details["verify"]["result"] == one.details["verify"]["result"]
    assert two.details["verify"]["verified_at"] == one.details["verify"]["verified_at"]


def test_a_cached_failure_stays_critical_without_reading_the_file_again(tmp_path, monkeypatch):
    cfg = gzip_set(tmp_path, gzip.compress(os.urandom(10_000)))
    cut(tmp_path / "b/db.sql.gz", 5000)
    spy = Spy(monkeypatch)
    first = Counters()
    judge(cfg, first)
    result = judge(cfg, rerun(first))
    assert spy.calls == 1
    assert result.status == CRITICAL and "truncated" in result.message
    assert result.details["verify"]["cached"] is True


@pytest.mark.parametrize("change", ["touched", "resized"])
def test_a_touched_or_resized_file_is_verified_again(tmp_path, monkeypatch, change):
    path = put(tmp_path / "b/db.sql.gz", gzip.compress(b"dump" * 1000), T0)
    cfg = backup_set(tmp_path, verify="gzip")
    spy = Spy(monkeypatch)
    first = Counters()
    judge(cfg, first)
    if change == "touched":
        os.utime(path, (T0 + 1, T0 + 1))
    else:
        put(path, path.read_bytes() + b"\0\0\0\0", T0)  # same mtime, zero padding added
    result = judge(cfg, rerun(first))
    assert spy.calls == 2
    assert result.details["verify"]["cached"] is False and result.status == OK, result.message


def test_a_hand_edited_cache_entry_is_verified_again_not_trusted(tmp_path, monkeypatch):
    path = put(tmp_path / "b/db.sql.gz", gzip.compress(b"dump"))
    st = path.stat()
    spy = Spy(monkeypatch)
    cache = Counters({f"verify:{path}": {"stamp": [st.st_size, st.st_mtime_ns, "gzip"]}})
    result = judge(backup_set(tmp_path, verify="gzip"), cache)
    assert spy.calls == 1
    assert result.status == OK, result.message


# --- the per-set timeout -------------------------------------------------------------

def test_a_verification_past_the_timeout_is_unknown_unfinished_and_not_cached(tmp_path):
    put(tmp_path / "b/db.sql.gz", gzip.compress(os.urandom(5 * archives.CHUNK), compresslevel=0))
    ticks = count()  # a clock that moves one second every time it is read
    cache = Counters()
    result = judge(backup_set(tmp_path, verify="gzip", timeout="3s"), cache, clock=lambda: next(ticks))
    assert result.status == UNKNOWN
    assert "verification unfinished after 3s" in result.message
    assert result.details["verify"]["ok"] is None
    assert cache.updates == {}


def test_a_tiny_timeout_on_a_50_mb_file_stops_the_read_early(tmp_path):
    path = put(tmp_path / "b/db.dump", b"")
    with open(path, "r+b") as handle:
        handle.truncate(50 << 20)
    put(tmp_path / "b/db.dump.sha256", b"0" * 64)
    cache = Counters()
    started = time.monotonic()
    result = judge(backup_set(tmp_path, path="b/*.dump", verify="sha256", timeout="1ms"), cache)
    assert result.status == UNKNOWN, result.message
    assert "verification unfinished after 1ms" in result.message
    assert time.monotonic() - started < 1
    assert cache.updates == {}


# --- monitor backup-check end to end -------------------------------------------------

def two_sets(tmp_path, second_path="c/*.gz") -> str:
    put(tmp_path / "b/db-1.sql.gz", gzip.compress(b"dump"))
    return (
        '[[backups]]\nname = "db"\npath = "b/*.sql.gz"\nverify = "gzip"\nmin_free_percent = 0\n'
        f'[[backups]]\nname = "site"\npath = "{second_path}"\nverify = "gzip"\nmin_free_percent = 0\n'
    )


def test_backup_check_prints_every_set_exits_2_and_logs_the_run(tmp_path, run_monitor, envelope, log_records):
    proc = run_monitor(["backup-check", "--format", "json"], tmp_path, config=two_sets(tmp_path),
                       steady_cpu=False)
    assert proc.returncode == 2, proc.stderr
    data = envelope(proc)
    assert data["command"] == "backup-check" and data["overall_status"] == "critical"
    assert data["checks"]["backup:db"]["status"] == "ok"
    assert data["checks"]["backup:db"]["kind"] == "backup"
    assert data["checks"]["backup:site"]["status"] == "critical"
    assert data["checks"]["backup:site"]["message"] == f"no file matches {tmp_path}/c/*.gz"
    runs = [r for r in log_records(tmp_path / "logs/backup.log") if r.get("event") == "run"]
    assert len(runs) == 1
    assert runs[0]["command"] == "backup-check" and runs[0]["overall_status"] == "critical"
    assert runs[0]["checks"] == {"backup:db": "ok", "backup:site": "critical"}


def test_backup_check_writes_age_and_size_to_the_textfile_and_exits_0_when_all_is_well(
        tmp_path, run_monitor, envelope):
    put(tmp_path / "c/site.tar.gz", gzip.compress(b"site"))
    (tmp_path / "prom").mkdir()
    proc = run_monitor(["backup-check", "--format", "json", "--textfile-dir", str(tmp_path / "prom")], tmp_path,
                       config=two_sets(tmp_path, "c/*.tar.gz"), steady_cpu=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert envelope(proc)["overall_status"] == "ok"
    text = (tmp_path / "prom/monitor_backup-check.prom").read_text()
    sizes = {name: (tmp_path / name).stat().st_size for name in ("b/db-1.sql.gz", "c/site.tar.gz")}
    assert f'monitor_backup_size_bytes{{backup="db"}} {float(sizes["b/db-1.sql.gz"])}' in text
    assert f'monitor_backup_size_bytes{{backup="site"}} {float(sizes["c/site.tar.gz"])}' in text
    assert 'monitor_backup_age_seconds{backup="db"}' in text
    assert 'monitor_check_status{check="backup:site",command="backup-check",kind="backup"} 0.0' in text


def test_the_verify_cache_keeps_only_the_current_newest_files(tmp_path, run_monitor, envelope):
    toml = two_sets(tmp_path, "c/*.gz")
    put(tmp_path / "c/site-1.gz", gzip.compress(b"one"), time.time() - 7200)
    first = envelope(run_monitor(["backup-check"], tmp_path, config=toml, steady_cpu=False))
    assert first["checks"]["backup:site"]["details"]["verify"]["cached"] is False
    put(tmp_path / "c/site-2.gz", gzip.compress(b"two"), time.time() - 60)
    second = envelope(run_monitor(["backup-check"], tmp_path, config=toml, steady_cpu=False))
    assert second["checks"]["backup:db"]["details"]["verify"]["cached"] is True
    assert second["checks"]["backup:site"]["details"]["verify"]["cached"] is False
    saved = json.loads((tmp_path / "state/backup-verify.json").read_text())
    assert set(saved) == {f"verify:{tmp_path}/b/db-1.sql.gz", f"verify:{tmp_path}/c/site-2.gz"}


def test_an_unknown_verify_method_exits_3_with_one_line(tmp_path, run_monitor):
    toml = '[[backups]]\nname = "db"\npath = "b/*.rar"\nverify = "rar"\n'
    proc = run_monitor(["backup-check", "--format", "json"], tmp_path, config=toml, steady_cpu=False)
    assert proc.returncode == 3
    assert proc.stdout == ""
    assert proc.stderr == ('config error: backups[0].verify: expected one of none, gzip, tar, zip, sha256, '
                           'got "rar"\n')


# --- hostile file names end to end (issue 11, item 3) -------------------------------------------

TOKEN = "123456789:AAFAKEtokenFAKEtokenFAKEtokenFAKE12"
# Not UTF-8 (0xff), and a terminal escape that would turn the operator's terminal red.
HOSTILE_NAME = b"db-\xff\x1b[31m.sql.gz"
SHOWN_NAME = "db-\\xff\\x1b[31m.sql.gz"  # how monitor prints it everywhere


@pytest.fixture
def telegram():
    from tests.telegram_standin import TelegramStandIn

    with TelegramStandIn() as standin:
        yield standin


@pytest.mark.parametrize("locale_env", [
    {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"},
    {"LANG": "C", "LC_ALL": "C"},
    # A UTF-8 locale such as en_US.UTF-8 writes stdout strictly (not installed on every machine).
    {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8:strict"},
], ids=["C.UTF-8", "C", "strict-utf-8"])
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_backup_file_name_that_is_not_utf8_is_alerted_and_printed_escaped_under_any_locale(
        tmp_path, telegram, locale_env, fmt):
    import subprocess

    from monitor.alerts.telegram import html_to_plain
    from tests.conftest import MONITOR, clean_env

    folder = tmp_path / "b"
    folder.mkdir()
    put(folder / "db-0.sql.gz", gzip.compress(b"older dump " * 10), time.time() - 7200)
    newest = os.path.join(os.fsencode(folder), HOSTILE_NAME)
    with open(newest, "wb") as handle:
        handle.write(gzip.compress(b"fresh dump " * 10)[:-6])  # truncated: verification fails
    config = tmp_path / "monitor.toml"
    config.write_text('[[backups]]\nname = "db"\npath = "b/*.sql.gz"\nverify = "gzip"\nmin_free_percent = 0\n'
                      f'[telegram]\nchat_ids = ["-100123"]\napi_url = "{telegram.api_url}"\n')
    proc = subprocess.run([MONITOR, "backup-check", "--format", fmt, "--config", str(config)], cwd=tmp_path,
                          env=clean_env({"TELEGRAM_BOT_TOKEN": TOKEN, **locale_env}), capture_output=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    stdout, stderr = proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8")  # both valid UTF-8
    assert proc.returncode == 2, stdout + stderr
    assert stderr == ""  # no traceback, no "notify error"
    assert "\x1b" not in stdout and "\x9b" not in stdout  # no raw escape reaches the terminal
    if fmt == "json":
        data = monitor_json(stdout)
        check = data["checks"]["backup:db"]
        assert check["details"]["newest"] == f"{folder}/{SHOWN_NAME}"
        assert f"({SHOWN_NAME}, " in check["message"]
        assert data["notifications"]["sent"] == 1 and "notify_error" not in data
    else:
        assert SHOWN_NAME in stdout and "CRITICAL  backup:db" in stdout

    # The alert arrived, naming the file the same way; its headline shows no number, as
    # the age (fresh) is not what is wrong.
    (message,) = telegram.delivered
    plain = html_to_plain(message.text)
    assert "🚨 CRITICAL" in plain and SHOWN_NAME in plain and "verification failed: truncated gzip" in plain
    assert "• backup:db\n" in plain and "critical at" not in plain
    for line in (tmp_path / "logs" / "backup.log").read_bytes().splitlines():
        record = json.loads(line.decode("utf-8"))
        assert "\x1b" not in json.dumps(record, ensure_ascii=False)
    assert any(SHOWN_NAME in r.get("message", "") for r in map(json.loads, (tmp_path / "logs/backup.log")
                                                               .read_text().splitlines()))


def backup_headline(result) -> str:
    from monitor.alerts import messages
    from monitor.alerts.state import Alert
    from monitor.results import with_identity
    from monitor.alerts.telegram import html_to_plain

    result = with_identity(result, "backup:db", "backup", 1.0)
    return html_to_plain(messages.compose([Alert("backup:db", result.status, result, T0, T0)], "h", "prod",
                                          T0)).splitlines()[1]


def test_an_old_backup_alerts_with_its_age_and_max_age_and_a_damaged_fresh_one_with_no_number(tmp_path):
    age = 13 * 3600 + 57 * 60
    put(tmp_path / "b/old.gz", gzip.compress(b"dump"), T0 - age)
    old = judge(backup_set(tmp_path, max_age="12h", verify="gzip"), now=lambda: T0)
    assert old.status == CRITICAL
    assert backup_headline(old) == "• backup:db — age 13h57m > 12h"

    put(tmp_path / "b/new.gz", gzip.compress(b"dump" * 100)[:-6], T0)  # truncated, 0 s old
    damaged = judge(backup_set(tmp_path, max_age="26h", verify="gzip", max_shrink_percent=100), now=lambda: T0)
    assert damaged.status == CRITICAL and "truncated gzip" in damaged.message
    assert backup_headline(damaged) == "• backup:db"  # not "— 0 s · critical at 26h"
