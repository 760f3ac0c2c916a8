"""Every file shipped under personalens/data is listed in pyproject's package data, so a wheel
(not only an editable install) carries it."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def test_every_data_file_is_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["personalens"]
    package = ROOT / "personalens"
    missing = [
        str(rel)
        for path in sorted((package / "data").rglob("*"))
        if path.is_file() and path.name != ".DS_Store"
        for rel in [PurePosixPath(path.relative_to(package).as_posix())]
        if not any(rel.match(g) and len(rel.parts) == len(PurePosixPath(g).parts) for g in globs)
    ]
    assert not missing, f"add these to [tool.setuptools.package-data] in pyproject.toml: {missing}"
