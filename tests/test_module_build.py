"""The importable ZIP: layout, exactly the module's files, version stamped, reproducible."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from receiver import __version__
from receiver.module.build import MODULE_NAME, BuildError, build_zip, module_files
from receiver.module.cli import module_group

MODULE = Path(__file__).resolve().parents[1] / "paheko_module"


def test_zip_holds_exactly_the_module_under_modules_name(tmp_path):
    target = build_zip(tmp_path, MODULE)
    with zipfile.ZipFile(target) as archive:
        names = archive.namelist()
        assert archive.testzip() is None
        contract = archive.read(f"modules/{MODULE_NAME}/_contract.html").decode()
        ini = archive.read(f"modules/{MODULE_NAME}/module.ini").decode()
        snippet = archive.read(f"modules/{MODULE_NAME}/snippets/home_button.html")
    expected = {p.relative_to(MODULE).as_posix() for p in MODULE.rglob("*")
                if p.is_file() and "screenshots" not in p.relative_to(MODULE).parts}
    assert all(name.startswith(f"modules/{MODULE_NAME}/") for name in names)
    assert {name.removeprefix(f"modules/{MODULE_NAME}/") for name in names} == expected
    assert len(names) == len(set(names))
    assert {"module.ini", "config.html", "index.html", "snippets/home_button.html", "icon.svg", "help.md"} <= expected
    assert f'module_version="{__version__}"' in contract and 'module_version="dev"' not in contract
    assert f', version {__version__}"\n' in ini  # shown in the Extensions list
    assert snippet == (MODULE / "snippets" / "home_button.html").read_bytes()


def test_build_is_reproducible(tmp_path):
    first = build_zip(tmp_path / "a", MODULE).read_bytes()
    second = build_zip(tmp_path / "b", MODULE).read_bytes()
    assert first == second
    with zipfile.ZipFile(tmp_path / "a" / f"paheko-module-{MODULE_NAME}-{__version__}.zip") as archive:
        assert {info.date_time for info in archive.infolist()} == {(2020, 1, 1, 0, 0, 0)}


def test_hidden_files_are_left_out(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for relative in module_files(MODULE):
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        (source / relative).write_bytes((MODULE / relative).read_bytes())
    (source / ".DS_Store").write_text("x")
    (source / "__pycache__").mkdir()
    (source / "__pycache__" / "x.pyc").write_text("x")
    (source / "screenshots").mkdir()
    (source / "screenshots" / "home.png").write_bytes(b"\x89PNG")
    with zipfile.ZipFile(build_zip(tmp_path / "out", source)) as archive:
        assert not [n for n in archive.namelist() if ".DS_Store" in n or "__pycache__" in n or "screenshots" in n]


def test_invalid_name_is_refused(tmp_path):
    with pytest.raises(BuildError, match="must match"):
        build_zip(tmp_path, MODULE, name="Recyclic-2")


def test_module_that_does_not_lint_is_refused(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "module.ini").write_text('name="x"\nrestrict_section=accounting\nrestrict_level=read\n')
    (source / "index.html").write_text("{{if $a}}")
    with pytest.raises(BuildError, match="E101"):
        build_zip(tmp_path / "out", source)
    assert not (tmp_path / "out").exists()


def test_missing_version_marker_is_refused(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "module.ini").write_text('name="x"\nrestrict_section=accounting\nrestrict_level=read\n')
    (source / "_contract.html").write_text('{{:assign var="contract" event="session.closed"}}')
    with pytest.raises(BuildError, match="version marker"):
        build_zip(tmp_path / "out", source)
    assert list((tmp_path / "out").iterdir()) == []


def test_cli_build_prints_the_zip_path(tmp_path):
    result = CliRunner().invoke(module_group, ["build", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert Path(result.output.strip()) == tmp_path / f"paheko-module-{MODULE_NAME}-{__version__}.zip"
    assert zipfile.is_zipfile(result.output.strip())
