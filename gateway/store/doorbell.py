"""Tell the other processes on one SQLite file that a key changed, without waiting for a poll.

SQLite has no notifications, and every process sharing a file runs on one host, so each
process listens on a named pipe (FIFO) and a writer, after its commit, writes one byte into
every other process's pipe. A lost bell costs nothing but time: the 250 ms poll stays as the
safety net.

Only our own user can ring, squat or silence the bells:
- The pipes live in a folder next to the database, made by `mkdtemp` (mode 0700, owned by us,
  a random name nobody can create first) and named in the database's `meta` table, which is how
  every process on the file finds the same folder. A process checks the folder through the file
  descriptor it will use (no symlink followed, so it cannot be swapped after the check): it
  must be a directory owned by our user with no group or other permission bits. A folder that
  fails the check (another user made or took it, or it was opened up) is refused with a warning
  naming why, and a fresh one is made and recorded: the bells go on working.
- Inside a 0700 folder nobody else can create, open or remove a pipe, so every byte in a pipe
  came from a process of our user: no other local user can flood us. An earlier design used
  predictable names in Linux's abstract socket namespace, where any user could bind the names
  first (silencing the bells) or send datagrams to them.
- A flood, even from our own user, is coalesced: a wake-up reads everything pending (up to
  64 KiB of bells per read) and wakes the reader once, then stops listening for QUIET seconds.
  However fast bells arrive, a process wakes at most 1/QUIET times a second, and a bell that
  lands in the pause is read as it ends. A full pipe already has a wake-up pending, so a
  writer skips it.
- Each pipe is made under a temporary name, opened for reading and writing by its owner (so it
  never reads end-of-file and writers never find it without a reader), then renamed into place.
  A pipe left by a process that died has no reader: the next writer that finds it removes it.

If the bells cannot be set up, or ringing fails in an unexpected way, the process says so once
in the log and relies on the poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import secrets
import stat
import tempfile
from pathlib import Path

log = logging.getLogger("gateway.store")
QUIET = 0.005  # after a wake-up, bells are read again this much later (at most 200 wake-ups a second)
SUFFIX = ".bell"
_FOLDER = re.compile(r"[^/\0]+\.bells-[A-Za-z0-9_]+")


class Refused(Exception):
    """The recorded folder exists but is not safe to use (the message says why)."""


def folder_stem(database: Path) -> str:
    return f"{database.name}.bells-"


def _checked(folder: Path) -> int:
    """Open `folder` and return its descriptor, if it is a directory of ours alone."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise Refused("it is a symbolic link") from None
        if err.errno == errno.ENOTDIR:
            raise Refused("it is not a directory") from None
        raise
    info = os.fstat(fd)
    why = ""
    if info.st_uid != os.geteuid():
        why = f"it belongs to uid {info.st_uid}, not to us (uid {os.geteuid()})"
    elif info.st_mode & 0o077:
        why = f"its mode {stat.S_IMODE(info.st_mode):04o} lets other users in (0700 expected)"
    if why:
        os.close(fd)
        raise Refused(why)
    return fd


class Doorbell:
    def __init__(self) -> None:
        self._folder: int | None = None  # descriptor of the checked folder
        self._name = ""  # this process's pipe in it
        self._pipe: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._paused: asyncio.TimerHandle | None = None
        self._ring_failed = False
        self.where: Path | None = None  # the folder, for operators and tests
        self.rung = asyncio.Event()

    @property
    def path(self) -> Path | None:
        """This process's pipe (peers write into it)."""
        return self.where / self._name if self.where is not None and self._pipe is not None else None

    def open(self, database: Path, recorded: str | None) -> str | None:
        """Listen in the folder the database names (`recorded`), or in a new one if it names none
        or one that fails the check. Returns the name to record when a new folder was made.
        Bells that cannot be set up are logged once; the poll then does the work alone."""
        parent = database.parent
        made = None
        try:
            fd = None
            if recorded is not None:
                try:
                    if not _FOLDER.fullmatch(recorded):
                        raise Refused("not a folder name this gateway makes")
                    fd = _checked(parent / recorded)
                except FileNotFoundError:
                    pass
                except Refused as why:
                    log.warning(
                        "refused the change-notification folder %s: %s; another local user may be "
                        "trying to intercept or silence them. Using a new folder",
                        parent / recorded,
                        why,
                    )
            if fd is None:
                made = Path(tempfile.mkdtemp(prefix=folder_stem(database), dir=parent)).name
                fd = _checked(parent / made)
                recorded = made
            self._listen(fd)
            assert recorded is not None  # (found, or just made)
            self.where = parent / recorded
        except (OSError, Refused) as err:
            log.warning("no change notifications between processes (%s); polling only", err)
            self.close()
            return None
        return made

    def _listen(self, folder: int) -> None:
        self._folder = folder
        token = secrets.token_hex(12)
        temporary, name = f".{token}.tmp", token + SUFFIX
        os.mkfifo(temporary, 0o600, dir_fd=folder)
        try:
            self._pipe = os.open(temporary, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=folder)
            os.rename(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=folder)
            raise
        self._name = name
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._pipe, self._drain)

    def _drain(self) -> None:
        """Read every pending bell, wake the reader once, and pause listening for QUIET s."""
        assert self._pipe is not None and self._loop is not None
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(self._pipe, 65536):
                pass
        self.rung.set()
        self._loop.remove_reader(self._pipe)
        self._paused = self._loop.call_later(QUIET, self._resume)

    def _resume(self) -> None:
        self._paused = None
        if self._pipe is not None and self._loop is not None:
            self._loop.add_reader(self._pipe, self._drain)

    def ring(self) -> int:
        """Wake every other process on this file; returns how many were told."""
        if self._folder is None:
            return 0
        told = 0
        try:
            names = os.listdir(self._folder)
        except OSError as err:
            self._failed(err)
            return 0
        for name in names:
            if name.endswith(SUFFIX) and name != self._name:
                told += self._ring_one(name)
        return told

    def _ring_one(self, name: str) -> int:
        assert self._folder is not None
        try:
            fd = os.open(name, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=self._folder)
        except OSError as err:
            if err.errno == errno.ENXIO:  # no reader: its process is gone
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=self._folder)
            elif err.errno not in (errno.ENOENT, errno.ELOOP, errno.EISDIR):  # gone meanwhile, or not a pipe
                self._failed(err)
            return 0
        try:
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                return 0
            os.write(fd, b"!")
            return 1
        except BlockingIOError:  # full: that process has a wake-up pending anyway
            return 1
        except BrokenPipeError:  # its reader closed after we opened it
            return 0
        except OSError as err:
            self._failed(err)
            return 0
        finally:
            os.close(fd)

    def _failed(self, err: OSError) -> None:
        if not self._ring_failed:
            log.warning("cannot ring the other processes (%s); they will see changes by polling", err)
            self._ring_failed = True

    def close(self) -> None:
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        if self._pipe is not None:
            if self._loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop may already be closed
                    self._loop.remove_reader(self._pipe)
            if self._folder is not None and self._name:
                with contextlib.suppress(OSError):
                    os.unlink(self._name, dir_fd=self._folder)
            os.close(self._pipe)
            self._pipe = None
        if self._folder is not None:
            os.close(self._folder)
            self._folder = None
        self._name = ""
