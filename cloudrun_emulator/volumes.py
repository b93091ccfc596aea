"""Cloud Storage volumes (``Volume.gcs``) for task attempts that run as local processes.

Cloud Run mounts a bucket (or, with the ``only-dir=`` mount option, one folder of it) with Cloud Storage FUSE:
objects appear as files under the mount path, and a file the task writes becomes the object of that name. Here
a mount is a local folder the task sees in place of the mount path (its arguments and environment values that
name a path under the mount are rewritten to the folder; Docker gets a bind mount instead). The folder is

- the bucket's local folder when the emulator maps that bucket to one (``local_buckets``): files land there
  as the task writes them, as objects land in the bucket under FUSE;
- otherwise a mirror of the bucket folder (``STORAGE_EMULATOR_HOST``, e.g. fake-gcs-server, else Google Cloud
  Storage), one per bucket folder and shared by every attempt that mounts it, as every task's Cloud Storage
  FUSE shows the same objects: before an attempt starts the mirror fetches what changed in the bucket since
  it last looked, and once the attempt has exited the files created, changed or deleted in it are written
  back, object by object. Each step costs what changed, not what the folder holds, so a batch whose tasks
  each add a file to one folder costs a number of copies in proportion to its size, not to its square; the
  attempts that start (or end) while a step runs share the next one. As Cloud Storage FUSE does, it shows an
  object inside a folder only when that folder has a placeholder object (``a/``) or the ``implicit-dirs``
  mount option is given.

A read-only volume is a read-only copy made for its attempt and never written back. A bucket that does not
exist fails the attempt before its process starts, as a mount that cannot be made does on Cloud Run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

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
    synced: _Snapshot | None = None  # a read-only copy: what it held when the attempt started
    mirror: _Mirror | None = None  # a writable volume of a remote bucket: what its changes are written back by


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
        """Write back every writable mount, remove the copies; the problems met, in words."""
        for mount in self.mounts:
            if mount.mirror is not None:
                problem = mount.mirror.push()
                if problem is not None:
                    self.problems.append(problem)
            elif mount.synced is not None and _snapshot(mount.folder) != mount.synced:
                # File modes stop a task from writing, but not one running as root: say what was dropped.
                self.problems.append(f"volume {mount.volume.name!r} is read-only: the task's changes were dropped")
        if self.scratch is not None:
            _make_writable(self.scratch)
            shutil.rmtree(self.scratch, ignore_errors=True)
        return self.problems


class MountError(Exception):
    """A volume that cannot be mounted; the attempt does not start."""


class GcsVolumes:
    """Mounts ``Volume.gcs`` volumes for attempts: a bucket's local folder, a mirror synced with Cloud Storage,
    or, read-only, a copy."""

    def __init__(self, local_buckets: Mapping[str, str | os.PathLike[str]] | None = None) -> None:
        self.local_buckets = {bucket: Path(folder) for bucket, folder in (local_buckets or {}).items()}
        self.objects_fetched = 0  # object contents written into a mirror or a copy, for tests and benchmarks
        self._client: Any = None
        self._lock = threading.Lock()
        self._root = Path(tempfile.mkdtemp(prefix="cloudrun-emulator-volumes-"))
        weakref.finalize(self, shutil.rmtree, self._root, True)
        # Object contents by (bucket, name, generation): a read-only copy takes an object fetched for an
        # earlier attempt from here instead of downloading it again.
        self._cache = self._root / "objects"
        self._cache.mkdir()
        self._mirrors: dict[tuple[str, str, bool], _Mirror] = {}

    def none(self) -> Mounts:
        """No volume: what a container without Cloud Storage volumes gets."""
        return Mounts([], None, self)

    def mount(self, volumes: Sequence[GcsVolume], mounts: Iterable[VolumeMount]) -> Mounts:
        """The volumes a container mounts, ready for its attempt. Raises ``MountError``. Blocking."""
        by_name = {volume.name: volume for volume in volumes}
        wanted = [(by_name[m.name], m.mount_path) for m in mounts if m.name in by_name]
        result = self.none()
        try:
            for index, (volume, path) in enumerate(wanted):
                result.mounts.append(self._mount_one(volume, path, result, index))
        except BaseException:
            result.close()
            raise
        return result

    def _mount_one(self, volume: GcsVolume, mount_path: str, mounts: Mounts, index: int) -> Mount:
        local = self.local_buckets.get(volume.bucket)
        if local is not None and not volume.read_only:
            folder = local / volume.only_dir if volume.only_dir else local
            folder.mkdir(parents=True, exist_ok=True)
            return Mount(volume, mount_path, folder)
        if not volume.read_only:
            mirror = self._mirror(volume)
            problem = mirror.pull()
            if problem is not None:
                raise MountError(problem)
            return Mount(volume, mount_path, mirror.folder, mirror=mirror)
        if mounts.scratch is None:
            mounts.scratch = Path(tempfile.mkdtemp(prefix="copy-", dir=self._root))
        copy = mounts.scratch / str(index)
        if local is None:
            copy.mkdir()
            self._download(volume, copy)
        else:
            folder = local / volume.only_dir if volume.only_dir else local
            if folder.is_dir():
                shutil.copytree(folder, copy)
            else:
                copy.mkdir()
        _make_read_only(copy)
        return Mount(volume, mount_path, copy, synced=_snapshot(copy))

    def _mirror(self, volume: GcsVolume) -> _Mirror:
        key = (volume.bucket, volume.only_dir, volume.implicit_dirs)
        with self._lock:
            if key not in self._mirrors:
                folder = Path(tempfile.mkdtemp(prefix="mirror-", dir=self._root))
                self._mirrors[key] = _Mirror(self, volume, folder)
            return self._mirrors[key]

    def storage(self) -> Any:
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

    def listing(self, volume: GcsVolume) -> dict[str, Any]:
        """The objects the mount shows, by name relative to it (folder placeholders end with "/"). Raises
        ``MountError``."""
        from google.api_core import exceptions as gexc

        prefix = prefix_of(volume)
        try:
            listed = self.storage().list_blobs(volume.bucket, prefix=prefix or None)
            blobs = {blob.name.removeprefix(prefix): blob for blob in listed}
        except gexc.NotFound:
            raise MountError(
                f"Cloud Storage bucket {volume.bucket!r} of volume {volume.name!r} does not exist"
            ) from None
        except gexc.GoogleAPICallError as exc:
            raise MountError(f"volume {volume.name!r}: cannot read gs://{volume.bucket}: {exc.message}") from None
        return {name: blobs[name] for name in _visible(list(blobs), volume.implicit_dirs)}

    def fetch(self, blob: Any, target: Path) -> None:
        """The object's content at ``target``, from the cache when this generation was fetched before; a file
        already there is replaced whole, never seen half written."""
        staged = self._cache / f".copy.{threading.get_ident()}"
        if blob.size:
            key = hashlib.sha256(f"{blob.bucket.name}/{blob.name}#{blob.generation}".encode()).hexdigest()
            cached = self._cache / key
            if not cached.exists():
                partial = self._cache / f".{key}.{threading.get_ident()}"
                blob.download_to_filename(str(partial))
                partial.replace(cached)
            shutil.copyfile(cached, staged)
        else:  # nothing to download
            staged.write_bytes(b"")
        staged.replace(target)
        with self._lock:
            self.objects_fetched += 1

    def _download(self, volume: GcsVolume, folder: Path) -> None:
        from google.api_core import exceptions as gexc

        downloads = []
        for name, blob in self.listing(volume).items():
            target = _file_for(folder, name)
            if target is not None:
                downloads.append((blob, target))
        try:
            with ThreadPoolExecutor(max_workers=_DOWNLOADERS) as pool:
                list(pool.map(lambda job: self.fetch(*job), downloads))
        except gexc.GoogleAPICallError as exc:
            raise MountError(f"volume {volume.name!r}: cannot read gs://{volume.bucket}: {exc.message}") from None


class _Synced(NamedTuple):
    """A mirror file as it was when it last matched its object."""

    generation: int
    size: int
    mtime_ns: int


class _Mirror:
    """The local folder of one writable bucket folder, shared by every attempt that mounts it. ``pull`` fetches
    what changed in the bucket since the last pull, ``push`` writes back what changed in the folder since the
    last push; a file the attempts changed and not yet pushed is never overwritten by a pull."""

    def __init__(self, volumes: GcsVolumes, volume: GcsVolume, folder: Path) -> None:
        self.volumes = volumes
        self.volume = volume
        self.folder = folder
        self._synced: dict[str, _Synced] = {}
        self._lock = threading.Lock()  # one pull or push at a time
        self.pull = _Shared(self._pull)
        self.push = _Shared(self._push)

    def _changed(self, name: str) -> bool:
        """Whether an attempt changed, created or deleted the file since it last matched its object."""
        synced = self._synced.get(name)
        try:
            info = os.stat(self.folder / name, follow_symlinks=False)
        except OSError:
            return synced is not None
        return synced is None or (synced.size, synced.mtime_ns) != (info.st_size, info.st_mtime_ns)

    def _pull(self) -> str | None:
        with self._lock:  # listed under the lock too: a listing older than the last push would undo it here
            try:
                listing = self.volumes.listing(self.volume)
            except MountError as exc:
                return str(exc)
            try:
                for name, blob in listing.items():
                    synced = self._synced.get(name)
                    if (synced is not None and synced.generation == blob.generation) or self._changed(name):
                        continue  # up to date, or changed here: the attempt's push writes it back
                    self._fetch(name, blob)
                for name in self._synced.keys() - listing.keys():  # deleted in the bucket
                    if not self._changed(name):
                        (self.folder / name).unlink(missing_ok=True)
                        del self._synced[name]
            except Exception as exc:  # any storage or file failure: the attempt cannot start
                where = f"gs://{self.volume.bucket}"
                return f"volume {self.volume.name!r}: cannot read {where}: {type(exc).__name__}: {exc}"
        return None

    def _fetch(self, name: str, blob: Any) -> None:
        target = _file_for(self.folder, name)
        if target is None:
            return
        self.volumes.fetch(blob, target)
        info = target.stat()
        self._synced[name] = _Synced(blob.generation, info.st_size, info.st_mtime_ns)

    def _push(self) -> str | None:
        from google.api_core import exceptions as gexc

        bucket = self.volumes.storage().bucket(self.volume.bucket)
        prefix = prefix_of(self.volume)
        with self._lock:
            try:
                now = _snapshot(self.folder)
                for name, seen in now.items():
                    synced = self._synced.get(name)
                    if synced is not None and (synced.size, synced.mtime_ns) == seen:
                        continue
                    blob = bucket.blob(prefix + name)
                    try:
                        blob.upload_from_filename(str(self.folder / name))
                    except FileNotFoundError:
                        continue  # deleted meanwhile: the next push deletes its object
                    self._synced[name] = _Synced(blob.generation, *seen)
                for name in self._synced.keys() - now.keys():
                    generation = self._synced.pop(name).generation
                    # Only the object the file was: one written since by someone else stays.
                    with contextlib.suppress(gexc.NotFound, gexc.PreconditionFailed):
                        bucket.blob(prefix + name).delete(if_generation_match=generation)
            except Exception as exc:  # any storage failure: the task has run, so it goes to its log
                return (
                    f"volume {self.volume.name!r}: writing back to gs://{self.volume.bucket} failed: "
                    f"{type(exc).__name__}: {exc}"
                )
        return None


class _Shared:
    """One pass of ``fn`` shared by the threads that ask for it: each caller gets the answer of a pass that
    began after it asked, and a pass serves every caller that asked before it began, so attempts that start
    together cost a pass or two, not one each."""

    def __init__(self, fn: Callable[[], str | None]) -> None:
        self._fn = fn
        self._cond = threading.Condition()
        self._begun = 0
        self._ended = 0
        self._running = False
        self._answer: str | None = None  # the last pass's

    def __call__(self) -> str | None:
        with self._cond:
            wanted = self._begun + 1  # the first pass to begin from now on
            while self._ended < wanted:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                self._begun += 1
                number = self._begun
                answer: str | None = "the pass did not end"
                self._cond.release()
                try:
                    answer = self._fn()
                finally:
                    self._cond.acquire()
                    self._running = False
                    self._ended = number
                    self._answer = answer
                    self._cond.notify_all()
            return self._answer


def prefix_of(volume: GcsVolume) -> str:
    """The object name prefix of the mount: its ``only-dir`` folder."""
    return f"{volume.only_dir}/" if volume.only_dir else ""


def _file_for(folder: Path, name: str) -> Path | None:
    """Where the object ``name`` is written under ``folder``, its parent folders made; None for a folder
    placeholder (the folder is made) and for a name that would land outside ``folder``."""
    target = folder / name
    if folder.resolve() not in target.resolve().parents:
        return None
    if name.endswith("/"):
        target.mkdir(parents=True, exist_ok=True)
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


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
    """The regular files under ``folder``, symbolic links not followed."""
    found: _Snapshot = {}
    pending = [""]
    while pending:
        relative = pending.pop()
        try:
            entries = os.scandir(folder / relative if relative else folder)
        except OSError:  # removed meanwhile
            continue
        with entries:
            for entry in entries:
                name = relative + entry.name
                if entry.is_dir(follow_symlinks=False):
                    pending.append(name + "/")
                elif entry.is_file(follow_symlinks=False):
                    info = entry.stat(follow_symlinks=False)
                    found[name] = (info.st_size, info.st_mtime_ns)
    return found


def _make_read_only(folder: Path) -> None:
    for path in [*folder.rglob("*"), folder]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _make_writable(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR | stat.S_IXUSR)
