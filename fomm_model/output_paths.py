"""Rules for every file a tool writes: never over an input, checked before the work, complete or not at all.

One place for them, used by the ``fomm`` commands, checkpoint saving and (later) the live app:

* :func:`check_output_file` / :func:`check_output_dir` before any work starts: an output must not be a folder
  (or a file where a folder is wanted), must have a writable home, must have a supported extension and must
  not be one of the inputs (compared as files, through symlinks and hard links);
* :func:`atomic_output` for the write itself: the result goes to a temporary file beside the target and is
  renamed over it only when complete, so a failed or killed run never leaves a half file where an old one was;
* :func:`remove_stale_temp_files`: temporary files of writers that were killed mid-write (``kill -9``) carry
  the writer's process id in their name and are removed by the next write into that folder.
"""
from __future__ import annotations

import logging
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

PathLike = str | os.PathLike
TEMP_MARK = '.fomm-tmp-'
# ".<target name>.fomm-tmp-<pid>-<random><target suffix>"; the suffix keeps format detection (ffmpeg) working
_TEMP_NAME = re.compile(r'^\.(?P<target>.+)\.fomm-tmp-(?P<pid>\d+)-[A-Za-z0-9_]+(\.[^.]*)?$')
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class OutputPathError(ValueError):
    """An output path that must not or cannot be written; the message says what to choose instead."""


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when two paths name one file: the same inode (symlinks, hard links) or, if one is missing,
    the same resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def check_not_input(output: PathLike, inputs: Mapping[str, PathLike | None], what: str = 'output') -> None:
    """Refuse an output that is one of the ``inputs`` (label -> path; None entries are skipped)."""
    for label, path in inputs.items():
        if path is not None and same_file(output, path):
            same = '' if str(output) == str(path) else f' ({path})'
            raise OutputPathError(f'{what} {output} is the same file as {label}{same}: writing it would destroy '
                                  f'that input. Choose another {what} path.')


def check_output_file(path: PathLike, *, what: str = 'output', inputs: Mapping[str, PathLike | None] | None = None,
                      extensions: Iterable[str] | None = None) -> Path:
    """Check, before any work, that a result file can be written at ``path``; returns it as a Path.

    Refused with :class:`OutputPathError`: an existing folder, one of ``inputs``, an extension outside
    ``extensions`` (when given), and a folder that cannot be created or written to. A missing folder is fine
    (it is created when the result is written) as long as it can be created.
    """
    out = Path(path)
    exts = tuple(e.lower() for e in extensions) if extensions is not None else None
    if out.is_dir():
        example = out / ('result' + (exts[0] if exts else ''))
        raise OutputPathError(f'{what} {out} is a folder; give a file name, e.g. {example}')
    check_not_input(out, inputs or {}, what)
    if exts is not None and out.suffix.lower() not in exts:
        kind = f"'{out.suffix}' files" if out.suffix else 'a file without an extension'
        raise OutputPathError(f'{what} {out}: cannot write {kind}; use one of {", ".join(exts)}')
    _check_writable_folder(out.parent, what, out)
    return out


def check_output_dir(path: PathLike, *, what: str = 'output folder') -> Path:
    """Check, before any work, that results can be written into folder ``path`` (existing or creatable)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise OutputPathError(f'{what} {out} is a file, not a folder; give a folder (it is created if missing)')
    _check_writable_folder(out, what, out)
    return out


def _check_writable_folder(folder: Path, what: str, target: Path) -> None:
    folder = Path(os.path.abspath(folder))
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f'{what} {target}: cannot create folder {folder}, because {existing} is a file')
    if existing != folder:  # created at write time; its nearest existing parent must let us do that
        if not os.access(existing, os.W_OK | os.X_OK):
            raise OutputPathError(f'{what} {target}: cannot create folder {folder}: {existing} is not writable. '
                                  f'Choose another {what}.')
        return
    try:  # a real probe: permissions, read-only file systems and /proc-like folders all show here
        probe = temp_path_beside(folder / 'write-probe')
    except OSError as exc:
        raise OutputPathError(f'{what} {target}: cannot write into folder {folder} ({exc.strerror or exc}). '
                              f'Choose another {what}.') from None
    probe.unlink(missing_ok=True)


def temp_path_beside(target: PathLike) -> Path:
    """Create an empty temporary file in ``target``'s folder, named after it and this process, and return it.

    The name (``.NAME.fomm-tmp-PID-XXXXXXXX.SUFFIX``) is hidden, ends with the target's suffix (writers that
    pick a format by extension still work) and lets :func:`remove_stale_temp_files` recognise orphans.
    """
    target = Path(target)
    # a long target name is cut so the temporary name stays within the usual 255-byte limit
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f'.{target.name[:180]}{TEMP_MARK}{os.getpid()}-',
                                suffix=target.suffix[:20])
    os.close(fd)
    return Path(name)


@contextmanager
def atomic_output(path: PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write the result to; rename it onto ``path`` on success.

    When the block raises (or the process dies), ``path`` keeps its old content, or stays absent; the
    temporary file is removed (or, after ``kill -9``, by the next write into the folder). The folder is
    created if missing. The result gets the old file's permissions, else the usual ones (0666 & ~umask).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(target.parent)
    tmp = temp_path_beside(target)
    try:
        yield tmp
        if fsync:
            with open(tmp, 'rb') as f:
                os.fsync(f.fileno())
        try:
            mode = stat.S_IMODE(os.stat(target).st_mode)
        except OSError:
            mode = 0o666 & ~_UMASK
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(data: bytes, path: PathLike) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_output`."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(text: str, path: PathLike) -> None:
    """Write UTF-8 ``text`` to ``path`` through :func:`atomic_output`."""
    atomic_write_bytes(text.encode('utf-8'), path)


def temp_files(folder: PathLike) -> list[Path]:
    """Temporary files of our naming pattern in ``folder`` (of running and of dead writers)."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    return [Path(folder) / n for n in names if _TEMP_NAME.match(n)]


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name != 'posix':  # no cheap liveness test (os.kill(pid, 0) would end it on Windows): keep the file
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temp_files(folder: PathLike) -> list[Path]:
    """Remove our temporary files in ``folder`` whose writer process no longer runs; log and return them.

    Only names of :func:`temp_path_beside`'s pattern are touched, and only when the process id in the name is
    gone (this assumes one machine writes into the folder, as a training run's rank 0 does).
    """
    removed = []
    for path in temp_files(folder):
        pid = int(_TEMP_NAME.match(path.name)['pid'])
        if _process_alive(pid):
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning('could not remove %s, a temporary file left by process %d: %s', path, pid, exc)
            continue
        log.warning('removed %s: a temporary file left by process %d, which stopped before it finished writing '
                    '(killed?)', path, pid)
        removed.append(path)
    return removed


__all__ = ['OutputPathError', 'same_file', 'check_not_input', 'check_output_file', 'check_output_dir',
           'temp_path_beside', 'atomic_output', 'atomic_write_bytes', 'atomic_write_text', 'temp_files',
           'remove_stale_temp_files']
