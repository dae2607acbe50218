"""Builds the importable ZIP of the Paheko module (``paheko-recyclic module build``).

Paheko imports a module from a ZIP whose every entry lies under ``modules/<name>/``
(*Configuration › Extensions › Importer*). The build refuses a module that does not lint clean,
stamps the version into ``_contract.html`` (the payload's ``module_version``) and ``module.ini``,
and is reproducible: sorted entries, fixed timestamps and permissions.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from receiver import __version__
from receiver.module.lint import MODULE_NAME_RE, Problem, check_module

MODULE_NAME = "recyclic"
ZIP_TIMESTAMP = (2020, 1, 1, 0, 0, 0)
_STAMPS = {
    "_contract.html": re.compile(r'(module_version=")[^"]*(")'),
    "module.ini": re.compile(r'^(author="[^"]*, version )[^"]*(")$', re.M),
}


class BuildError(Exception):
    """The module cannot be packaged; the message says why."""


def default_source() -> Path:
    """``paheko_module/`` of the source checkout this package runs from."""
    source = Path(__file__).resolve().parents[2] / "paheko_module"
    if not (source / "module.ini").is_file():
        raise BuildError(f"module source not found at {source}: pass it explicitly")
    return source


#: Folders of the source that are not part of the module (the README's pictures: Paheko never shows them).
NOT_SHIPPED = frozenset({"__pycache__", "screenshots"})


def module_files(source: Path) -> list[Path]:
    """Every file shipped in the ZIP, relative to ``source``: hidden files, caches and screenshots excluded."""
    return sorted(
        path.relative_to(source) for path in source.rglob("*")
        if path.is_file()
        and not any(part.startswith(".") or part in NOT_SHIPPED for part in path.relative_to(source).parts)
    )


def stamp(relative: Path, content: bytes, version: str) -> bytes:
    """``content`` with the version written in, for the files that carry it."""
    pattern = _STAMPS.get(relative.as_posix())
    if pattern is None:
        return content
    text, count = pattern.subn(lambda m: f"{m.group(1)}{version}{m.group(2)}", content.decode("utf-8"))
    if count != 1:
        raise BuildError(f"{relative}: expected exactly one version marker, found {count}")
    return text.encode("utf-8")


def build_zip(
    output_dir: Path, source: Path | None = None, *, name: str = MODULE_NAME, version: str = __version__,
) -> Path:
    """Write ``<output_dir>/paheko-module-<name>-<version>.zip`` and return its path."""
    source = source or default_source()
    if not MODULE_NAME_RE.match(name):
        raise BuildError(f"module name {name!r} must match {MODULE_NAME_RE.pattern}")
    errors: list[Problem] = [p for p in check_module(source, name) if p.is_error]
    if errors:
        raise BuildError("the module does not lint clean:\n" + "\n".join(map(str, errors)))
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / f"paheko-module-{name}-{version}.zip"
    partial = target.with_name(target.name + ".partial")
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for relative in module_files(source):
                info = zipfile.ZipInfo(f"modules/{name}/{relative.as_posix()}", date_time=ZIP_TIMESTAMP)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, stamp(relative, (source / relative).read_bytes(), version))
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target
