"""Writing the files a user sees: atomically, and never through a symbolic link.

Every output of the project (``convert-hf``'s checkpoint, results files, recorded profiles,
reports, diffs, plots, benchmark reports) goes through ``atomic_write``, ``write_files_atomic``
(several files as one change) or one of the helpers on top of them:

- The bytes go to a fresh temporary file next to the target (``O_CREAT | O_EXCL | O_NOFOLLOW``,
  so a planted file or link with that name is never opened), are flushed and ``fsync``-ed, and
  the temporary file then replaces the target with ``os.replace``: a reader sees the old file or
  the whole new one, never a part.
- A target that is a symbolic link is refused (checked before writing and again right before the
  rename): writing "through" it would overwrite whatever file it points to. So is a read-only one
  (``read_only``): a rename would replace it without asking.
- ``copy_regular_file_within`` copies an input into an output only when it is a regular file
  that resolves inside the input's root, so a link planted in an input directory cannot smuggle
  an outside file (``/etc/shadow``, an SSH key) into the output.

Results, expectation and config files are read with ``read_input_text``: a regular file up to a
size, never a FIFO or a device (``/dev/zero`` would fill the memory, a FIFO block forever), in
UTF-8.

Problems are ``ValueError`` naming the path, which the command lines turn into one line and exit
status 2.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any


def real_path(path: str | Path) -> Path:
    """``path`` absolute, with every link resolved as far as it goes: ``Path.resolve`` without its
    ``RuntimeError`` for a link that loops (a user's path is compared, never trusted to resolve)."""
    return Path(os.path.realpath(path))


def read_input_bytes(path: str | Path, limit_bytes: int, what: str = "file") -> bytes:
    """The bytes of the regular file ``path`` (links followed), at most ``limit_bytes`` of them:
    ``ValueError`` (the reason, without the path) for a FIFO, a device or a larger file; a folder
    or a missing file is ``OSError`` from the read, as before."""
    with _opened_regular(path) as handle:
        data = handle.read(limit_bytes + 1)
    if len(data) > limit_bytes:
        raise ValueError(f"larger than any {what} ({limit_bytes / 1e6:g} MB at most)")
    return data


def read_input_text(path: str | Path, limit_bytes: int, what: str = "file") -> str:
    """:func:`read_input_bytes` as UTF-8 text; bytes that are not are a ``ValueError`` too."""
    data = read_input_bytes(path, limit_bytes, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text: byte {exc.start} ({exc.reason})") from None


def _opened_regular(path: str | Path) -> IO[bytes]:
    _check_regular(os.stat(path).st_mode, path)  # before opening: a FIFO opened would wake its writer
    # Opened without blocking (one swapped in meanwhile would block open() itself), then checked again.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        _check_regular(os.fstat(fd).st_mode, path)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check_regular(mode: int, path: str | Path) -> None:
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if not stat.S_ISREG(mode):
        raise ValueError("not a regular file (a FIFO or a device, which reading could block or never end)")


# The errors of looking a path up that pathlib's checks (``exists``, ``is_dir``) take as "not there".
_NOT_THERE_ERRNOS = (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP)


def lookup_problem(path: str | Path) -> str | None:
    """Why the system cannot look ``path`` up (None: it can, or nothing is there): a name too long
    for the file system, which pathlib's checks raise from instead of answering."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno not in _NOT_THERE_ERRNOS:
            return exc.strerror or str(exc)
    except ValueError:  # "embedded null byte": a JSON file's path may hold one, a command line's cannot
        return "a path cannot hold a NUL character"
    return None


def check_output_file(path: str | Path, what: str = "", *, parents: bool = False) -> Path:
    """``path`` as a file that may be (re)written: not a directory, not a symbolic link, and its
    directory exists (with ``parents``: or can be created, no ancestor being a file). ``what``
    prefixes the message (an option name such as ``-o``)."""
    path = Path(path)
    label = f"{what} {path}" if what else str(path)
    if path.is_symlink():
        raise ValueError(f"{label}: is a symbolic link; refusing to write through it")
    if path.is_dir():
        raise ValueError(f"{label}: is a directory; give a file name")
    if path.exists() and not path.is_file():
        raise ValueError(f"{label}: exists and is not a regular file")
    if why := read_only(path):
        raise ValueError(f"{label}: {why}")
    parent = path.absolute().parent
    check_output_dir(parent, label)
    if not parents and not parent.is_dir():
        raise ValueError(f"{label}: the directory {parent} does not exist")
    if parent.is_dir() and (why := cannot_write_in(parent)):
        raise ValueError(f"{label}: cannot write in {parent} ({why})")
    if not parent.is_dir():  # to be created: in the nearest folder that exists (/proc, a read-only one)
        ancestor = next(p for p in parent.parents if p.is_dir())
        if why := cannot_write_in(ancestor):
            raise ValueError(f"{label}: cannot create {parent}: cannot write in {ancestor} ({why})")
    return path


def read_only(path: str | Path) -> str | None:
    """Why the existing file ``path`` is kept from being replaced (None: it is not): no write
    permission for anyone (``chmod a-w``), the usual way to protect a file such as a baseline.
    A replacement by rename would not ask the file, and root would pass a permission test."""
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) and not mode & 0o222:
        return f"is read-only (mode {stat.S_IMODE(mode):o}); refusing to replace it (chmod u+w it first)"
    return None


def cannot_write_in(directory: str | Path) -> str | None:
    """Why no file can be created in the existing ``directory`` (None: one can). A probe file is
    created and removed: permission bits alone do not say it (root on a read-only mount, /proc)."""
    probe = Path(directory) / f".write-probe-{secrets.token_hex(6)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.unlink(probe)
    return None


def check_output_dir(directory: str | Path, label: str = "") -> Path:
    """``directory`` is a directory or can be created: no ancestor of it is a file."""
    directory = Path(directory)
    label = label or str(directory)
    for parent in (directory.absolute(), *directory.absolute().parents):
        try:
            exists = parent.exists()
        except OSError as exc:  # a name too long for the file system
            raise ValueError(f"{label}: {exc.strerror or exc}") from None
        if exists:
            if not parent.is_dir():
                itself = parent == directory.absolute() and label == str(directory)
                raise ValueError(f"{label}: {'is' if itself else f'lies under {parent}, which is'} not a directory")
            return directory
    return directory  # pragma: no cover - the root always exists


@contextlib.contextmanager
def atomic_write(path: str | Path, *, parents: bool = False) -> Iterator[IO[bytes]]:
    """A binary file handle whose contents replace ``path`` when the block ends without error.

    ``parents`` creates the missing directories. The target is never followed if it is a
    symbolic link, and a read-only one is never replaced (``ValueError`` for both); an ``OSError``
    while writing leaves the old file untouched and no temporary file behind.
    """
    path = _writable(path, parents)
    tmp, handle = _open_temporary(path)
    done = False
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        _replace(tmp, path)
        done = True
    finally:
        if not done:
            tmp.unlink(missing_ok=True)


def write_files_atomic(contents: Mapping[Path, bytes], *, parents: bool = False) -> None:
    """Write several files as one change, as far as a filesystem allows.

    Every file is written and ``fsync``-ed to its temporary name first; only then do the renames
    run, one after the other with no I/O between them. A failure (a full disk, a link planted in
    the way) before the renames leaves every old file as it was. Only a kill that falls between
    two renames, microseconds apart, can leave some files new and some old.
    """
    targets = [_writable(path, parents) for path in contents]
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in zip(targets, contents.values(), strict=True):
            try:
                tmp, handle = _open_temporary(path)
                staged.append((tmp, path))
                with handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as exc:
                exc.filename = str(path)  # the target, not its temporary name (a full disk names none)
                raise
        for _tmp, path in staged:
            _refuse_link(path, _PLANTED)
        for tmp, path in staged:
            try:
                os.replace(tmp, path)
            except OSError as exc:
                exc.filename, exc.filename2 = str(path), None
                raise
    finally:
        for tmp, _path in staged:
            tmp.unlink(missing_ok=True)


def _writable(path: str | Path, parents: bool) -> Path:
    path = Path(path)
    _refuse_link(path, "is a symbolic link; refusing to write through it")
    if why := read_only(path):
        raise ValueError(f"{path}: {why}")
    if parents:
        check_output_dir(path.parent, str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _open_temporary(path: Path) -> tuple[Path, IO[bytes]]:
    # A fresh name in the target's directory: the same filesystem for os.replace. O_EXCL and
    # O_NOFOLLOW never open an existing file or link; the mode follows the umask like any new file
    # (mkstemp would make it 0600). The target's name is cut to 200 bytes in it, so that a name the
    # file system takes (255 bytes) gets a temporary one it takes too: whole characters, never half
    # of one (a name that is not UTF-8, which a file system may refuse).
    name = path.name
    while len(os.fsencode(name)) > 200:
        name = name[:-1]
    tmp = path.parent / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    return tmp, os.fdopen(fd, "wb")


def _replace(tmp: Path, path: Path) -> None:
    # A link may have been planted while we wrote; os.replace would replace the link itself,
    # but the user asked for a file there and gets a clear refusal instead.
    _refuse_link(path, _PLANTED)
    os.replace(tmp, path)


_PLANTED = "became a symbolic link while being written; refusing to replace it"


def _refuse_link(path: Path, why: str) -> None:
    if path.is_symlink():
        raise ValueError(f"{path}: {why}")


def write_bytes_atomic(path: str | Path, data: bytes, *, parents: bool = False) -> None:
    write_files_atomic({Path(path): data}, parents=parents)


def write_text_atomic(path: str | Path, text: str, *, parents: bool = False) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), parents=parents)


def json_text(data: Any) -> str:
    """The project's JSON file form: sorted keys, indent 2, UTF-8 as is, a trailing newline; NaN
    and infinities are refused (``ValueError``), since they are not JSON."""
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_json_atomic(path: str | Path, data: Any, *, parents: bool = False) -> None:
    write_text_atomic(path, json_text(data), parents=parents)


def check_regular_file_within(src: str | Path, root: str | Path) -> Path:
    """``src`` resolved, if it is a regular file inside ``root`` (a symbolic link is followed only
    as far as ``root`` reaches; a device, FIFO, directory or dangling link is refused)."""
    src, root = Path(src), Path(root)
    real = real_path(src)
    if not real.is_relative_to(real_path(root)):
        raise ValueError(f"{src}: resolves to {real}, outside {root}; refusing to copy it")
    try:
        mode = real.stat().st_mode
    except OSError as exc:
        raise ValueError(f"{src}: cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise ValueError(f"{src}: is not a regular file; refusing to copy it")
    return real


def copy_regular_file_within(src: str | Path, root: str | Path, dst: str | Path) -> None:
    """Copy ``src`` to ``dst`` (atomically, never through a link at ``dst``) only if it is a regular
    file that resolves inside ``root`` (``check_regular_file_within``). ``ValueError`` names ``src``."""
    real = check_regular_file_within(src, root)
    try:
        # O_NOFOLLOW on the resolved path: a link swapped in after the check is refused, and
        # O_NONBLOCK keeps a FIFO swapped in from blocking the open (fstat then refuses it).
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise ValueError(f"{src}: cannot open: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as source:
        if not stat.S_ISREG(os.fstat(source.fileno()).st_mode):
            raise ValueError(f"{src}: is not a regular file; refusing to copy it")
        with atomic_write(dst) as target:
            shutil.copyfileobj(source, target)
