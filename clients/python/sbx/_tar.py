"""Directory trees to and from tar, for upload_dir() and download_dir().

pack_dir() tars a local directory in memory. extract() unpacks an archive
that came out of a sandbox, which the sandboxed code may have shaped: every
member is checked before anything is written, and one absolute name, ".."
component, link leading outside the target, or device file rejects the
whole archive (UnsafeArchive). With tarfile's "data" filter (Python 3.12,
and the 3.8.17/3.9.17/3.10.12/3.11.4 backports) the checks are tarfile's
own; without it they are done here, to the same rules.
"""
from __future__ import annotations

import io
import os
import posixpath
import tarfile
from typing import List

from .errors import UnsafeArchive

_HAS_DATA_FILTER = hasattr(tarfile, "data_filter")


def pack_dir(local_dir: str) -> bytes:
    """The contents of local_dir (not the directory itself) as a tar.
    Owners are dropped; symlinks are kept as links."""
    if not os.path.isdir(local_dir):
        raise NotADirectoryError(local_dir)

    def anonymous(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        return ti

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name in sorted(os.listdir(local_dir)):
            tf.add(os.path.join(local_dir, name), arcname=name,
                   recursive=True, filter=anonymous)
    return buf.getvalue()


def _inside(rel: str) -> bool:
    """Whether a normalized relative POSIX path stays below its root."""
    return rel != ".." and not rel.startswith("../") and \
        not posixpath.isabs(rel)


def _check_names(members: List[tarfile.TarInfo]) -> None:
    """No absolute names and no ".." (the data filter would quietly strip
    a leading "/"; we refuse the archive instead)."""
    for m in members:
        name = m.name
        if posixpath.isabs(name) or os.path.isabs(name):
            raise UnsafeArchive("member %r has an absolute name" % name)
        if ".." in name.split("/"):
            raise UnsafeArchive("member %r has a '..' component" % name)


def _check_manually(members: List[tarfile.TarInfo], dest: str) -> None:
    """The data filter's rules, for Pythons without it."""
    real_dest = os.path.realpath(dest)
    for m in members:
        name = m.name
        target = os.path.realpath(os.path.join(real_dest, name))
        if target != real_dest and \
                not target.startswith(real_dest + os.sep):
            raise UnsafeArchive("member %r would be written outside %s"
                                % (name, dest))
        if m.ischr() or m.isblk() or m.isfifo() or not (
                m.isfile() or m.isdir() or m.issym() or m.islnk()):
            raise UnsafeArchive("member %r is a special file" % name)
        if m.issym() or m.islnk():
            link = m.linkname
            if posixpath.isabs(link):
                raise UnsafeArchive("link %r points to the absolute path "
                                    "%r" % (name, link))
            base = posixpath.dirname(name) if m.issym() else ""
            rel = posixpath.normpath(posixpath.join(base, link))
            if not _inside(rel):
                raise UnsafeArchive("link %r points outside %s: %r"
                                    % (name, dest, link))
            real = os.path.realpath(os.path.join(real_dest, rel))
            if real != real_dest and not real.startswith(real_dest + os.sep):
                raise UnsafeArchive("link %r points outside %s: %r"
                                    % (name, dest, link))


def _sanitize(m: tarfile.TarInfo) -> tarfile.TarInfo:
    """What the data filter does to metadata: no owners, no set-id bits,
    no group/other write, owner read/write kept."""
    m.uid, m.gid = os.getuid(), os.getgid()
    m.uname = m.gname = ""
    if m.isfile() or m.islnk():
        mode = m.mode & 0o755 | 0o600
        if not m.mode & 0o100:
            mode &= ~0o111
        m.mode = mode
    elif m.isdir():
        m.mode = m.mode & 0o755 | 0o700
    return m


def extract(data: bytes, local_dir: str, use_filter: bool = True) -> None:
    """Unpacks the tar bytes into local_dir (made if missing), checking
    every member first; raises UnsafeArchive and writes nothing when one
    fails. use_filter=False forces the checks done here even where
    tarfile has its data filter (for tests)."""
    os.makedirs(local_dir, exist_ok=True)
    try:
        tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
    except tarfile.TarError as e:
        raise UnsafeArchive("not a tar archive: %s" % e) from e
    with tf:
        members = tf.getmembers()
        _check_names(members)
        if use_filter and _HAS_DATA_FILTER:
            dest = os.path.realpath(local_dir)
            for m in members:
                try:
                    tarfile.data_filter(m, dest)  # type: ignore[attr-defined]
                except tarfile.TarError as e:  # FilterError and subclasses
                    raise UnsafeArchive("%s" % e) from e
            try:
                tf.extractall(local_dir, members=members,
                              filter="data")  # type: ignore[call-arg]
            except tarfile.TarError as e:
                raise UnsafeArchive("%s" % e) from e
            return
        _check_manually(members, local_dir)
        kw = {"filter": "fully_trusted"} if _HAS_DATA_FILTER else {}
        tf.extractall(local_dir, members=[_sanitize(m) for m in members],
                      **kw)  # type: ignore[arg-type]
