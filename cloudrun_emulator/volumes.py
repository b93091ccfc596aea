"""Cloud Storage volumes (``Volume.gcs``) for task attempts that run as local processes.

Cloud Run mounts a bucket (or, with the ``only-dir=`` mount option, one folder of it) with Cloud Storage FUSE:
objects appear as files under the mount path, and a file the task writes becomes the object of that name. Here
a mount is a local folder the task sees in place of the mount path (its arguments and environment values that
name a path under the mount are rewritten to the folder; Docker gets a bind mount instead). The folder is

- the bucket's local folder when the emulator maps that bucket to one (``local_buckets``): files land there
  as the task writes them, as objects land in the bucket under FUSE;
- otherwise a fresh folder filled from the bucket (``STORAGE_EMULATOR_HOST``, e.g. fake-gcs-server, else
  Google Cloud Storage) before the attempt starts; files created, changed or deleted are written back, object
  by object, once the attempt has exited. As Cloud Storage FUSE does, it shows an object inside a folder only
  when that folder has a placeholder object (``a/``) or the ``implicit-dirs`` mount option is given.

A read-only volume is a read-only copy that is never written back. A bucket that does not exist fails the
attempt before its process starts, as a mount that cannot be made does on Cloud Run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudrun_emulator.records import GcsVolume, VolumeMount

_DOWNLOADERS = 8  # objects fetched side by side when a copy is filled

_Snapshot = dict[str, tuple[int, int]]
"""Relative file name -> (size, mtime in ns), as the mount held it when the attempt started."""


@dataclass
class Mount:
    """One volume as one attempt sees it."""

    volume: GcsVolume
    mount_path: str
    folder: Path
    synced: _Snapshot | None = None  # None: the folder is the bucket's own local folder; nothing to write back


@dataclass
class Mounts:
    """The attempt's mounted volumes; ``close`` writes back what the attempt changed and removes the copies."""

    mounts: list[Mount]
    scratch: Path | None
    store: GcsVolumes
    problems: list[str] = field(default_factory=list)

    def local_path(self, text: str) -> str:
        """``text`` with a leading mount path replaced by the mount's local folder (the longest path first)."""
        for mount in sorted(self.mounts, key=lambda m: len(m.mount_path), reverse=True):
            root = mount.mount_path.rstrip("/") or "/"
            if text == root or text.startswith(root.rstrip("/") + "/"):
                return str(mount.folder) + text[len(root.rstrip("/")) :]
        return text

    def docker_args(self) -> list[str]:
        return [
            item
            for m in self.mounts
            for item in ("-v", f"{m.folder}:{m.mount_path}{':ro' if m.volume.read_only else ''}")
        ]

    def close(self) -> list[str]:
        """Write back every writable copy, remove the copies; the problems met, in words."""
        for mount in self.mounts:
            if mount.synced is None:
                continue
            if mount.volume.read_only:
                # File modes stop a task from writing, but not one running as root: say what was dropped.
                if _snapshot(mount.folder) != mount.synced:
                    self.problems.append(f"volume {mount.volume.name!r} is read-only: the task's changes were dropped")
                continue
            try:
                self.store.write_back(mount)
            except Exception as exc:  # any storage failure: the task has run, so it goes to its log
                self.problems.append(
                    f"volume {mount.volume.name!r}: writing back to gs://{mount.volume.bucket} failed: "
                    f"{type(exc).__name__}: {exc}"
                )
        if self.scratch is not None:
            _make_writable(self.scratch)
            shutil.rmtree(self.scratch, ignore_errors=True)
        return self.problems


class MountError(Exception):
    """A volume that cannot be mounted; the attempt does not start."""


class GcsVolumes:
    """Mounts ``Volume.gcs`` volumes for attempts: a bucket's local folder, or a copy synced with Cloud Storage."""

    def __init__(self, local_buckets: Mapping[str, str | os.PathLike[str]] | None = None) -> None:
        self.local_buckets = {bucket: Path(folder) for bucket, folder in (local_buckets or {}).items()}
        self._client: Any = None
        self._lock = threading.Lock()
        # Object contents by (bucket, name, generation): each attempt lists its folder, but an object already
        # fetched for an earlier attempt is copied from here instead of downloaded again.
        self._cache = Path(tempfile.mkdtemp(prefix="cloudrun-emulator-objects-"))
        weakref.finalize(self, shutil.rmtree, self._cache, True)

    def none(self) -> Mounts:
        """No volume: what a container without Cloud Storage volumes gets."""
        return Mounts([], None, self)

    def mount(self, volumes: Sequence[GcsVolume], mounts: Iterable[VolumeMount]) -> Mounts:
        """The volumes a container mounts, ready for its attempt. Raises ``MountError``. Blocking."""
        by_name = {volume.name: volume for volume in volumes}
        wanted = [(by_name[m.name], m.mount_path) for m in mounts if m.name in by_name]
        result = self.none()
        if not wanted:
            return result
        result.scratch = Path(tempfile.mkdtemp(prefix="cloudrun-emulator-volume-"))
        try:
            for index, (volume, path) in enumerate(wanted):
                result.mounts.append(self._mount_one(volume, path, result.scratch / str(index)))
        except BaseException:
            result.close()
            raise
        return result

    def _mount_one(self, volume: GcsVolume, mount_path: str, copy: Path) -> Mount:
        local = self.local_buckets.get(volume.bucket)
        if local is not None:
            folder = local / volume.only_dir if volume.only_dir else local
            if not volume.read_only:
                folder.mkdir(parents=True, exist_ok=True)
                return Mount(volume, mount_path, folder)
            if folder.is_dir():
                shutil.copytree(folder, copy)
            else:
                copy.mkdir()
            _make_read_only(copy)
            return Mount(volume, mount_path, copy, synced=_snapshot(copy))
        copy.mkdir()
        synced = self._download(volume, copy)
        if volume.read_only:
            _make_read_only(copy)
        return Mount(volume, mount_path, copy, synced=synced)

    def _storage(self) -> Any:
        with self._lock:
            if self._client is None:
                from google.auth.credentials import AnonymousCredentials
                from google.cloud import storage  # type: ignore[attr-defined]

                host = os.environ.get("STORAGE_EMULATOR_HOST")
                if host:
                    endpoint = host if "://" in host else f"http://{host}"
                    self._client = storage.Client(
                        project="cloudrun-emulator",
                        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                        client_options={"api_endpoint": endpoint},
                    )
                else:
                    self._client = storage.Client()
            return self._client

    def _prefix(self, volume: GcsVolume) -> str:
        return f"{volume.only_dir}/" if volume.only_dir else ""

    def _download(self, volume: GcsVolume, folder: Path) -> _Snapshot:
        from google.api_core import exceptions as gexc

        bucket = self._storage().bucket(volume.bucket)
        prefix = self._prefix(volume)
        try:
            if not bucket.exists():
                raise MountError(f"Cloud Storage bucket {volume.bucket!r} of volume {volume.name!r} does not exist")
            blobs = {blob.name.removeprefix(prefix): blob for blob in bucket.list_blobs(prefix=prefix or None)}
            downloads = []
            for name in _visible(list(blobs), volume.implicit_dirs):
                target = folder / name
                if folder not in target.resolve().parents:
                    continue  # a name that would land outside the mount
                if name.endswith("/"):  # a folder placeholder object
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                if blobs[name].size:
                    downloads.append((blobs[name], target))
                else:
                    target.write_bytes(b"")
            with ThreadPoolExecutor(max_workers=_DOWNLOADERS) as pool:
                list(pool.map(lambda job: self._fetch(*job), downloads))
        except gexc.GoogleAPICallError as exc:
            raise MountError(f"volume {volume.name!r}: cannot read gs://{volume.bucket}: {exc.message}") from None
        return _snapshot(folder)

    def _fetch(self, blob: Any, target: Path) -> None:
        """The object's content at ``target``, from the cache when this generation was fetched before."""
        key = hashlib.sha256(f"{blob.bucket.name}/{blob.name}#{blob.generation}".encode()).hexdigest()
        cached = self._cache / key
        if not cached.exists():
            partial = self._cache / f".{key}.{threading.get_ident()}"
            blob.download_to_filename(str(partial))
            partial.replace(cached)
        shutil.copyfile(cached, target)

    def write_back(self, mount: Mount) -> None:
        """Objects for the files the attempt created or changed; none for the files it deleted."""
        before = mount.synced or {}
        after = _snapshot(mount.folder)
        bucket = self._storage().bucket(mount.volume.bucket)
        prefix = self._prefix(mount.volume)
        for name, seen in after.items():
            if before.get(name) != seen:
                bucket.blob(prefix + name).upload_from_filename(str(mount.folder / name))
        for name in before.keys() - after.keys():
            bucket.blob(prefix + name).delete()


def _visible(names: list[str], implicit_dirs: bool) -> list[str]:
    """The object names a FUSE mount shows: without implicit-dirs, only those whose every folder has its
    placeholder object (``a/`` for ``a/b.txt``), as Cloud Storage FUSE lists a folder only when it has one."""
    names = [name for name in names if name]
    if implicit_dirs:
        return names
    placeholders = {name for name in names if name.endswith("/")}
    shown = []
    for name in names:
        parts = name.rstrip("/").split("/")[:-1]
        if all("/".join(parts[: n + 1]) + "/" in placeholders for n in range(len(parts))):
            shown.append(name)
    return shown


def _snapshot(folder: Path) -> _Snapshot:
    found: _Snapshot = {}
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            info = path.stat()
            found[path.relative_to(folder).as_posix()] = (info.st_size, info.st_mtime_ns)
    return found


def _make_read_only(folder: Path) -> None:
    for path in [*folder.rglob("*"), folder]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _make_writable(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR | stat.S_IXUSR)
