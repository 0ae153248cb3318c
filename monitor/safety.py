"""The state and logs folders of a root run: who may write them, who owns what it creates.

Like sshd's StrictModes: a root run refuses a folder that its group or others can
write, and one below a parent that others can write (a root-owned sticky parent such
as `/tmp` is fine). Whoever can write there could swap the files a root run writes or
reads. A folder owned by a service user is fine: that user is trusted with its own
installation, and the file opens never follow its links or FIFOs (item 1).

Mixed users: folders a root run creates belong to the installation's owner (the config
file's owner when it is not root, else the owner of the folder above), and files a root
run leaves in a folder owned by another user are handed to that user before the run
ends, so a later run as that user keeps its lock, alert state and logs.

A run that is not root checks nothing here: it can only spoil its own files.
"""

import logging
import os
import stat

_config_file: str | None = None
_handover: set[str] = set()   # folders owned by a user other than root, used by this root run


def use_config(source: str | None) -> None:
    """The config file in use: its owner owns the folders a root run creates."""
    global _config_file
    _config_file = source


def _is_root() -> bool:
    return os.geteuid() == 0


def _nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.isdir(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def owner_for(path: str) -> tuple[int, int]:
    """(uid, gid) a folder created at `path` gets: the config file's owner unless root,
    else the owner of the nearest existing folder above."""
    if _config_file:
        try:
            st = os.stat(_config_file)
            if st.st_uid != 0:
                return st.st_uid, st.st_gid
        except OSError:
            pass
    st = os.stat(_nearest_existing(os.path.dirname(os.path.abspath(path))))
    return st.st_uid, st.st_gid


def _who(uid: int) -> str:
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _describe(st) -> str:
    return f"mode {stat.S_IMODE(st.st_mode):04o}, owner {_who(st.st_uid)}"


def _parents(path: str):
    """The folders above `path` up to `/`, as written and with links resolved."""
    seen = []
    for start in (os.path.abspath(path), os.path.realpath(path)):
        folder = os.path.dirname(start)
        while True:
            if folder not in seen:
                seen.append(folder)
            up = os.path.dirname(folder)
            if up == folder:
                break
            folder = up
    return seen


def problem(path: str) -> str | None:
    """Why a root run must not use the folder `path`, or None (always None when not root)."""
    if not _is_root():
        return None
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        if st.st_mode & 0o022:
            by = "its group and others" if st.st_mode & 0o020 and st.st_mode & 0o002 else \
                "its group" if st.st_mode & 0o020 else "others"
            return f"refusing {path}: writable by {by} ({_describe(st)}); chmod go-w it"
    for parent in _parents(path):
        try:
            pst = os.stat(parent)
        except OSError:
            continue  # not there yet: created below one that is checked
        if pst.st_mode & 0o002 and not (pst.st_uid == 0 and pst.st_mode & stat.S_ISVTX):
            return (f"refusing {path}: the folder above it, {parent}, is writable by others "
                    f"({_describe(pst)}) and not a root-owned sticky folder like /tmp")
    return None


class Refused(Exception):
    """A root run must not use this folder (the message says why)."""


def prepare(path: str, mode: int) -> None:
    """Make sure `path` is a folder this run may use, creating it (and the folders above
    it) with `mode`, owned as `owner_for` says when root. Raise Refused, or OSError."""
    reason = problem(path)
    if reason:
        raise Refused(reason)
    if not os.path.isdir(path):
        owner = owner_for(path) if _is_root() else None
        missing = []
        folder = os.path.abspath(path)
        while not os.path.isdir(folder) and not os.path.lexists(folder):
            missing.append(folder)
            up = os.path.dirname(folder)
            if up == folder:
                break
            folder = up
        for folder in reversed(missing):
            try:
                os.mkdir(folder, mode)
            except FileExistsError:
                continue  # another run made it meanwhile
            if owner and owner[0] != 0:
                os.chown(folder, *owner, follow_symlinks=False)
    if _is_root():
        try:
            if os.stat(path).st_uid != 0:
                _handover.add(path)  # cli.entry hands over at the end of every command
        except OSError:
            pass


def hand_over() -> None:
    """Give the files and folders root created in a folder owned by another user to
    that user: regular files with a single link and folders, never through a link."""
    if not _is_root():
        return
    for folder in sorted(_handover):
        try:
            _hand_over(folder, depth=1)
        except OSError:
            pass  # best effort: the next root run tries again


_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)


def _hand_over(folder: str, depth: int) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        owner = os.fstat(fd)
        if owner.st_uid != 0:
            _give(fd, owner.st_uid, owner.st_gid, depth)
    finally:
        os.close(fd)


def _give(fd: int, uid: int, gid: int, depth: int) -> None:
    """fchown the root-owned entries of the folder open at `fd` (folders `depth` deep)."""
    for name in os.listdir(fd):
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            continue
        folder = stat.S_ISDIR(st.st_mode)
        # A file with a second link may be a hard link to /etc/shadow: left alone.
        if not (folder and depth > 0 or stat.S_ISREG(st.st_mode) and st.st_nlink == 1):
            continue
        try:
            entry = os.open(name, _OPEN | (os.O_DIRECTORY if folder else 0), dir_fd=fd)
        except OSError:
            continue
        try:
            again = os.fstat(entry)
            if (again.st_ino, again.st_dev) != (st.st_ino, st.st_dev):
                continue  # replaced meanwhile
            if again.st_uid == 0 and (folder or again.st_nlink == 1):
                os.fchown(entry, uid, gid)
            if folder:
                _give(entry, uid, gid, depth - 1)
        except OSError:
            pass
        finally:
            os.close(entry)


def notify_without_state(notify, config: dict) -> dict:
    """Alerts while the state folder is refused: better than silence, with no memory.

    Nothing is read from or written to the refused folder (its alert state, silences
    and outbox could be anyone's): `notify(config)` runs on a private empty folder with
    `alerts.alert_after = 1`, so every non-ok check is sent on every run until the folder
    is fixed; no RESOLVED, no reminder pacing, no silences. What Telegram did not accept
    cannot be kept, and is dropped with an ERROR record naming it.
    """
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="monitor-refused-state-")
    try:
        stateless = {**config, "paths": {**config["paths"], "state": folder},
                     "alerts": {**config["alerts"], "alert_after": 1}}
        summary = notify(stateless)
        from monitor.alerts import outbox

        for message in outbox.load(folder):
            logging.getLogger("monitor").error(
                "dropped undelivered %s: the state folder %s is refused, so the outbox cannot keep it "
                "(last error: %s)", outbox.describe(message), config["paths"]["state"],
                message.get("last_error") or "none",
                extra={"event": "outbox_dropped", "message_id": message.get("id")})
        summary["outbox"] = None
        return summary
    finally:
        shutil.rmtree(folder, ignore_errors=True)
