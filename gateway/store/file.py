"""DB-less mode (`database: file:///path/keys.yaml`): the keys come from a file, for sidecars.

The file is the keys file that `gateway keys export` writes (keyfile.py), each entry with its
secret (`sealed` or `key`). Every process reads it on its own, and looks at it every 250 ms
(at once when inotify reports a change in its folder):
when its identity changes (inode, size, modification or change time; following links, so the
symlink swap of a Kubernetes Secret volume counts), it is read again and the keyring reloaded.
A file that cannot be used keeps the last good keys and is logged, once per version of it.

Nothing is written: admin writes answer `409 read_only_store` (the admin API asks `read_only`
first; the writes below refuse too). Usage counts and the audit of reveals live in memory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.core import sealing
from gateway.core.errors import RuleError
from gateway.core.record import Key, iso_time
from gateway.core.tokens import Token
from gateway.store.base import Audit, Changes, StoreUnavailable
from gateway.store.keyfile import FINGERPRINT, MAX_FILE_BYTES, KeyFileError, make_key, parse_keys

log = logging.getLogger("gateway.store.file")
POLL_SECONDS = 0.25
AUDIT_KEPT = 1000
PREFIX = "file://"
MAX_IPS = 10_000  # the file is the operator's: limits.ips_per_key (an admin API rule) does not apply


def file_path(url: str) -> str:
    """`file:///etc/gateway/keys.yaml` -> `/etc/gateway/keys.yaml` (always absolute)."""
    return url[len(PREFIX) :]


def secret_box() -> sealing.SecretBox | None:
    """The secret key as the runtime finds it: the environment (or the file it names; `gateway
    serve` puts a key from the config file there too), else the generated `data/secret.key` of
    a gateway without a database file. `check_secret` then confirms it is the runtime's. (The
    store is opened from its URL alone; a runtime that hands it the box sets `box` instead.)"""
    value = os.environ.get("GATEWAY_SECRET_KEY", "")
    named = os.environ.get("GATEWAY_SECRET_KEY_FILE")
    if named and not value:
        try:
            value = Path(named).read_text().removesuffix("\n")
        except OSError:
            value = ""
    if not value:
        try:
            value = Path("data", "secret.key").read_text().strip()
        except OSError:
            return None
    return sealing.SecretBox(value) if value else None


def read_only_error() -> RuleError:
    return RuleError(None, "the keys come from a file (DB-less mode): change the file, not the API", "read_only_store")


# inotify (Linux): the flags of <sys/inotify.h>
IN_EVENTS = 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200  # modify, attrib, close_write, moved, create, delete
IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000
SETTLE_SECONDS = 0.05  # after an event, let the writer finish before looking


class FolderWatch:
    """inotify on the file's folder, where the system has it: an event wakes the next look at
    once instead of at the next 250 ms tick. Only a hint; the look decides (`_stat`), and the
    250 ms polling goes on (a link to another folder, a system without inotify)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.fd = -1
        self.changed = asyncio.Event()

    def start(self) -> bool:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if fd < 0:
                return False
            if libc.inotify_add_watch(fd, os.fsencode(self.folder), IN_EVENTS) < 0:
                os.close(fd)
                return False
        except (OSError, AttributeError):
            return False
        self.fd = fd
        asyncio.get_running_loop().add_reader(fd, self._drain)
        return True

    def _drain(self) -> None:
        try:
            while os.read(self.fd, 65536):
                pass
        except OSError:  # BlockingIOError: read everything there was
            pass
        self.changed.set()

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(RuntimeError):  # the loop is gone already
                asyncio.get_running_loop().remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1


class FileStore:
    read_only = True

    def __init__(self, path: str, box: sealing.SecretBox | None = None) -> None:
        self.path = path
        self.box = box
        self.keys: dict[str, Key] = {}
        self.secrets: dict[str, str] = {}
        self.version = 0
        self.loaded_at = 0.0
        self._identity: tuple[int, ...] | None = None
        self._refused: tuple[int, ...] | None = None  # the version of the file last refused (logged once)
        self._usage: dict[str, tuple[str, int]] = {}
        self._audit: collections.deque[Audit] = collections.deque(maxlen=AUDIT_KEPT)
        self._audit_seq = 0
        self._watch: FolderWatch | None = None

    # the file
    def _stat(self) -> tuple[int, ...] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _read(self) -> tuple[dict[str, Key], dict[str, str]]:
        assert self.box is not None
        try:
            with open(self.path, "rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
                # entries without created_at show the file's time: the same in every worker and reload
                stamp = iso_time(os.fstat(handle.fileno()).st_mtime)
        except OSError as err:
            raise KeyFileError(f"{self.path}: cannot read: {err.strerror}") from None
        parsed = parse_keys(data, self.box, source=self.path, ips_limit=MAX_IPS, need_secrets=True)
        keys: dict[str, Key] = {}
        secrets: dict[str, str] = {}
        for entry in parsed.entries:
            assert entry.id is not None and entry.secret is not None
            keys[entry.id] = make_key(entry, entry.secret, self.box, entry.id, stamp)
            secrets[entry.id] = entry.secret
        return keys, secrets

    async def _reload(self) -> bool:
        """Read the file if it changed; True when new keys were installed."""
        identity = self._stat()
        if identity is None or identity == self._identity or identity == self._refused:
            if identity is None and self._refused != (-1,):
                log.warning("keys file %s is missing; keeping the %d keys loaded before", self.path, len(self.keys))
                self._refused = (-1,)
            return False
        try:
            keys, secrets = await asyncio.to_thread(self._read)
        except KeyFileError as err:
            self._refused = identity
            log.warning("keys file not used, keeping the %d keys loaded before: %s", len(self.keys), err)
            return False
        self._identity, self._refused = identity, None
        self.keys, self.secrets = keys, secrets
        self.version += 1
        self.loaded_at = time.time()
        log.info("keys file %s read: %d keys", self.path, len(keys))
        return True

    # the store interface
    async def open(self) -> None:
        if self.box is None:
            self.box = secret_box()
        if self.box is None:
            raise StoreUnavailable(
                "a keys file needs the secret key it was sealed with: set GATEWAY_SECRET_KEY or GATEWAY_SECRET_KEY_FILE"
            )
        identity = self._stat()
        if identity is None:
            raise StoreUnavailable(f"keys file {self.path} cannot be read (file:/// takes an absolute path)")
        try:
            self.keys, self.secrets = await asyncio.to_thread(self._read)
        except KeyFileError as err:
            raise StoreUnavailable(str(err)) from None
        self._identity = identity
        self.version = 1
        self.loaded_at = time.time()
        watch = FolderWatch(os.path.dirname(self.path) or "/")
        self._watch = watch if watch.start() else None

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    async def check_secret(self, fingerprint: str) -> bool:
        return self.box is not None and self.box.digest(FINGERPRINT) == fingerprint

    async def wait_for_change(self) -> str:
        watch = self._watch
        if watch is None:
            await asyncio.sleep(POLL_SECONDS)
        else:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_SECONDS):
                    await watch.changed.wait()
            if watch.changed.is_set():
                await asyncio.sleep(SETTLE_SECONDS)
                watch.changed.clear()
        return "resync" if await self._reload() else "none"

    async def latest_change(self) -> int:
        return self.version

    async def changes_since(self, seq: int) -> Changes:
        return Changes(self.version, None if seq != self.version else [], self.loaded_at)

    def _shown(self, key: Key) -> Key:
        used = self._usage.get(key.id)
        if used is None:
            return key
        return dataclasses.replace(key, last_used_at=used[0], request_count=key.request_count + used[1])

    async def get_key(self, key_id: str) -> Key | None:
        key = self.keys.get(key_id)
        return None if key is None else self._shown(key)

    async def get_keys(self, key_ids: list[str]) -> list[Key]:
        return [self._shown(self.keys[key_id]) for key_id in key_ids if key_id in self.keys]

    async def get_sealed(self, key_id: str) -> str | None:
        secret = self.secrets.get(key_id)
        if secret is None or self.box is None:
            return None
        return self.box.encrypt(secret, key_id)

    async def list_keys(self, account: str | None, after: str | None, limit: int) -> list[Key]:
        chosen = sorted(
            key_id
            for key_id, key in self.keys.items()
            if key_id > (after or "") and (account is None or key.account == account)
        )
        return [self._shown(self.keys[key_id]) for key_id in chosen[:limit]]

    async def count_keys(self) -> dict[str, int]:
        return dict(collections.Counter(key.account for key in self.keys.values()))

    async def record_usage(self, usage: dict[str, tuple[str, int]]) -> None:
        for key_id, (at, count) in usage.items():
            last, total = self._usage.get(key_id, ("", 0))
            self._usage[key_id] = (max(last, at), total + count)

    # the audit trail of this process (reveals), in memory
    async def add_audit(self, entry: Audit) -> None:
        self._audit_seq += 1
        self._audit.append(dataclasses.replace(entry, seq=self._audit_seq))

    async def list_audit(
        self, key_id: str | None, after: int | None, limit: int, account: str | None = None
    ) -> list[Audit]:
        found = [
            entry
            for entry in self._audit
            if entry.seq > (after or 0)
            and (key_id is None or entry.key_id == key_id)
            and (account is None or entry.account == account)
        ]
        return found[:limit]

    # tokens: only the root token (from the config or environment) in DB-less mode
    async def list_tokens(self, account: str | None) -> list[Token]:
        return []

    async def token_by_digest(self, digest: str) -> Token | None:
        return None

    async def touch_token(self, token_id: str, at: str) -> None:
        return None

    # writes
    async def create_key(self, key: Key, sealed: str, limit: int, audit: Audit | None = None) -> None:
        raise read_only_error()

    async def create_keys(self, items: list[tuple[Key, str]], limit: int, audit: Sequence[Audit] = ()) -> None:
        raise read_only_error()

    async def update_key(
        self, key_id: str, changes: dict[str, Any], updated_at: str, audit: Audit | None = None
    ) -> Key | None:
        raise read_only_error()

    async def delete_key(self, key_id: str, audit: Audit | None = None) -> bool:
        raise read_only_error()

    async def create_token(self, token: Token) -> None:
        raise read_only_error()

    async def delete_token(self, token_id: str, account: str | None) -> bool:
        raise read_only_error()
