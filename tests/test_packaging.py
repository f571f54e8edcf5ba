"""The wheels hold what an installed user needs. The development install is editable, so it reads
the source tree and would hide a file that never reaches a wheel: a module, a shipped checkpoint,
the ``py.typed`` marker or a console script. Each package is built from a copy of its folder (the
checkout stays clean), offline, with the setuptools already installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.scripts import ROOT
from timm_anytime.models.pretrained import SHIPPED


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], zipfile.ZipFile]:
    """``wheels(package)``: that package's wheel, built once for the whole module."""
    built: dict[str, zipfile.ZipFile] = {}

    def wheel(package: str) -> zipfile.ZipFile:
        if package not in built:
            built[package] = build_wheel(package, tmp_path_factory.mktemp(package))
        return built[package]

    return wheel


def build_wheel(package: str, tmp_path: Path) -> zipfile.ZipFile:
    source = tmp_path / "src" / package
    shutil.copytree(ROOT / package, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    result = subprocess.run([*command, "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    return zipfile.ZipFile(wheel)


def source_files(package: str, module: str) -> set[str]:
    folder = ROOT / package / "src"
    return {p.relative_to(folder).as_posix() for p in (folder / module).rglob("*.py")}


@pytest.mark.slow
@pytest.mark.parametrize(("package", "module"), [("osgd", "osgd"), ("timm_anytime", "timm_anytime")])
def test_wheel_holds_every_module_and_the_typing_marker(package: str, module: str, wheels) -> None:
    names = set(wheels(package).namelist())
    missing = source_files(package, module) - names
    assert not missing, f"modules missing from the {package} wheel: {sorted(missing)}"
    assert f"{module}/py.typed" in names, f"{package}: add py.typed to [tool.setuptools.package-data]"
    assert not any(n.startswith(("tests/", "examples/")) for n in names)


@pytest.mark.slow
def test_timm_anytime_wheel_ships_the_checkpoints_and_console_scripts(wheels) -> None:
    wheel = wheels("timm_anytime")
    names = set(wheel.namelist())
    shipped = ROOT / "timm_anytime" / "src" / "timm_anytime" / "pretrained"
    for tag in SHIPPED:
        files = {p.name for p in (shipped / tag).iterdir()}
        assert {"model.safetensors", "config.json", "README.md"} <= files, tag
        for file in files:
            assert f"timm_anytime/pretrained/{tag}/{file}" in names, f"{tag}/{file} is not in the wheel"
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((ROOT / "timm_anytime" / "pyproject.toml").read_text())["project"]["scripts"]
    assert "anytime-train" in scripts
    for name, target in scripts.items():
        assert f"{name} = {target}" in text, f"console script {name} is not in the wheel"


@pytest.mark.slow
@pytest.mark.parametrize("package", ["osgd", "timm_anytime"])
def test_wheel_carries_the_apache_license_text(package: str, wheels) -> None:
    """Apache-2.0 (section 4a) asks every redistribution to carry the license text: the wheel's
    dist-info holds it, and its metadata names the license as an SPDX expression (PEP 639)."""
    wheel = wheels(package)
    names = wheel.namelist()
    (license_file,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    assert wheel.read(license_file) == (ROOT / "LICENSE").read_bytes(), f"{package}/LICENSE differs from ./LICENSE"
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    assert "License-Expression: Apache-2.0" in wheel.read(metadata).decode().splitlines()


def test_the_license_text_is_the_apache_license() -> None:
    """The root LICENSE is the Apache License 2.0 that the packages, model cards and pretrained
    configs declare; each package folder keeps a byte-identical copy (sdists and wheels are built
    from those folders alone)."""
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text
    for package in ("osgd", "timm_anytime"):
        assert (ROOT / package / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes(), package
