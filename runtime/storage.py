"""Reading and writing job outputs by URI, atomically.

Paths go through Hadoop's FileSystem API (via the session's JVM), so the same
code handles local paths, ``file://``, ``hdfs://`` and ``s3a://``.

A stage writes its whole output directory into a hidden staging directory next
to the target; only when everything is written is it swapped in:

    <parent>/.<name>.staging-<id>   written by the job
    <parent>/<name>                 -> renamed to <parent>/.<name>.previous
    staging                         -> renamed to <parent>/<name>
    <parent>/.<name>.previous       deleted

A crash before the swap leaves the previous output untouched (the staging
directory is removed by the next run). A crash between the two renames leaves
only ``.previous``; :func:`recover` (called before every read and write) renames
it back. Directory renames are atomic on local disks and HDFS; on object stores
(s3a) they are copies, so there the window is wider, not closed.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from typing import Any, Iterator

STAGING_MARK = ".staging-"
PREVIOUS_SUFFIX = ".previous"


class StorageError(RuntimeError):
    pass


class FileSystem:
    """A thin wrapper over ``org.apache.hadoop.fs.FileSystem`` for one session."""

    def __init__(self, spark):
        self._jvm = spark.sparkContext._jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()

    def _path(self, uri: str):
        return self._jvm.org.apache.hadoop.fs.Path(uri)

    def _fs(self, uri: str):
        fs = self._path(uri).getFileSystem(self._conf)
        # No .crc side files next to local outputs (HDFS keeps its own checksums).
        fs.setWriteChecksum(False)
        return fs

    def exists(self, uri: str) -> bool:
        return bool(self._fs(uri).exists(self._path(uri)))

    def is_dir(self, uri: str) -> bool:
        return bool(self._fs(uri).getFileStatus(self._path(uri)).isDirectory())

    def size(self, uri: str) -> int:
        """Total bytes under ``uri`` (a file or a directory tree)."""
        return int(self._fs(uri).getContentSummary(self._path(uri)).getLength())

    def list_names(self, uri: str) -> list[str]:
        return sorted(status.getPath().getName() for status in self._fs(uri).listStatus(self._path(uri)))

    def delete(self, uri: str) -> None:
        self._fs(uri).delete(self._path(uri), True)

    def rename(self, source: str, target: str) -> None:
        if not self._fs(source).rename(self._path(source), self._path(target)):
            raise StorageError(f"could not rename {source} to {target}")

    def mkdirs(self, uri: str) -> None:
        self._fs(uri).mkdirs(self._path(uri))

    def qualify(self, uri: str) -> str:
        """The absolute form of ``uri`` (relative local paths resolved against the working directory)."""
        path = self._path(uri)
        return str(path.getFileSystem(self._conf).makeQualified(path).toString())

    def write_bytes(self, uri: str, data: bytes) -> None:
        stream = self._fs(uri).create(self._path(uri), True)
        try:
            stream.write(bytearray(data))
        finally:
            stream.close()

    def write_text(self, uri: str, text: str) -> None:
        self.write_bytes(uri, text.encode("utf-8"))

    def read_bytes(self, uri: str) -> bytes:
        stream = self._fs(uri).open(self._path(uri))
        try:
            return bytes(self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
        finally:
            stream.close()

    def read_text(self, uri: str) -> str:
        return self.read_bytes(uri).decode("utf-8")


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(part.strip("/") for part in parts)])


def _split(target: str) -> tuple[str, str]:
    parent, _, name = target.rstrip("/").rpartition("/")
    return (parent or "."), name


def _previous(target: str) -> str:
    parent, name = _split(target)
    return f"{parent}/.{name}{PREVIOUS_SUFFIX}"


def recover(fs: FileSystem, target: str) -> None:
    """Restore ``target`` if a crash happened between the two renames of a swap."""
    previous = _previous(target)
    if not fs.exists(target) and fs.exists(previous):
        fs.rename(previous, target)


def _remove_stale_staging(fs: FileSystem, target: str) -> None:
    parent, name = _split(target)
    if not fs.exists(parent):
        return
    for entry in fs.list_names(parent):
        if entry.startswith(f".{name}{STAGING_MARK}"):
            fs.delete(f"{parent}/{entry}")


@contextlib.contextmanager
def atomic_output(spark, target: str) -> Iterator[str]:
    """Yield a staging URI to write into; publish it at ``target`` only if the block succeeds."""
    fs = FileSystem(spark)
    recover(fs, target)
    _remove_stale_staging(fs, target)
    parent, name = _split(target)
    fs.mkdirs(parent)
    staging = f"{parent}/.{name}{STAGING_MARK}{uuid.uuid4().hex}"
    try:
        yield staging
    except BaseException:
        if fs.exists(staging):
            fs.delete(staging)
        raise
    previous = _previous(target)
    if fs.exists(previous):
        fs.delete(previous)
    if fs.exists(target):
        fs.rename(target, previous)
    fs.rename(staging, target)
    if fs.exists(previous):
        fs.delete(previous)


def open_stage(spark, stage_uri: str, *, produced_by: str) -> str:
    """Check that a stage's published output exists (recovering an interrupted swap) and return it."""
    fs = FileSystem(spark)
    recover(fs, stage_uri)
    if not fs.exists(stage_uri):
        raise StorageError(f"{stage_uri} does not exist: run {produced_by} first")
    return stage_uri


def write_json(spark, uri: str, payload: dict[str, Any]) -> None:
    FileSystem(spark).write_text(uri, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def read_json(spark, uri: str) -> dict[str, Any]:
    return json.loads(FileSystem(spark).read_text(uri))
