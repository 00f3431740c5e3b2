"""Writing a folder so that readers see the old one or the new one, never half, and a
crash at any moment leaves something the next start can finish or undo.

A folder `X` is replaced in steps, each a rename (atomic on one file system):

1. the new content is written into a hidden staging folder `.X.staging-<pid>-<rand>`;
2. the complete staging folder is renamed `.X.new` (from here on, it is the truth);
3. `X` (if any) is renamed `.X.old`;
4. `.X.new` is renamed `X`;
5. `.X.old` is removed.

`recover_folders(parent)` runs at the next start and brings every folder back to a
whole state: a `.X.new` is carried through steps 3-5 (the new content wins); a
`.X.old` without `X` is put back; leftovers of finished swaps and the staging
folders of dead processes are removed. Steps 2-5 and recovery hold a lock file in
the parent folder, so two processes never swap or recover the same folder at once.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".charforge-swap.lock"
_STAGING = ".staging-"


@contextmanager
def _locked(parent: Path) -> Iterator[None]:
    """An exclusive lock on `parent` (a lock file; blocking). No-op where flock is absent."""
    try:
        import fcntl
    except ImportError:  # Windows: no concurrent recovery there
        yield
        return
    with (parent / LOCK_NAME).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _host() -> str:
    return socket.gethostname().replace("-", "_")


def process_alive(pid: int) -> bool:
    """Whether a process of this machine is still running (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _swap_in(target: Path, new: Path) -> None:
    """Steps 3-5: `new` (complete) becomes `target`; the old one is removed."""
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        if old.exists():
            shutil.rmtree(old)
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def recover_folders(parent: Path) -> list[str]:
    """Finish or undo the folder swaps a crash interrupted in `parent`, and remove
    staging folders left by dead processes. Returns what it did, one line each."""
    try:
        hidden = [p for p in parent.iterdir() if p.name.startswith(".") and p.is_dir()]
    except OSError:  # no such folder, or not ours to read
        return []
    if not hidden:
        return []
    try:
        return _recover(parent)
    except OSError:  # a read-only workspace: leave it as it is; readers skip hidden folders
        return []


def _recover(parent: Path) -> list[str]:
    done: list[str] = []
    host = _host()
    with _locked(parent):
        for path in parent.iterdir():
            name = path.name
            if not name.startswith(".") or not path.is_dir():
                continue
            if name.endswith(".new"):
                target = parent / name[1:-len(".new")]
                _swap_in(target, path)
                done.append(f"finished replacing {target.name}")
            elif name.endswith(".old"):
                target = parent / name[1:-len(".old")]
                if target.exists():
                    shutil.rmtree(path, ignore_errors=True)
                    done.append(f"removed the old copy of {target.name}")
                else:
                    path.rename(target)
                    done.append(f"restored {target.name}")
            elif _STAGING in name:
                owner = name.rsplit(_STAGING, 1)[1].split("-")
                if len(owner) >= 3 and owner[0] == host and owner[1].isdigit() \
                        and process_alive(int(owner[1])):
                    continue  # another live process is writing it
                shutil.rmtree(path, ignore_errors=True)
                done.append(f"removed an unfinished write ({name})")
    return done


@contextmanager
def folder_written_whole(target: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside `target`. When the block succeeds the
    staging folder replaces `target` (see the module's steps); when it fails nothing
    changes."""
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".{target.name}{_STAGING}{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
        with _locked(parent):
            new = target.with_name(f".{target.name}.new")
            if new.exists():
                shutil.rmtree(new)
            staging.rename(new)
            _swap_in(target, new)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
