"""The wheel: one top-level name, hopscope, holding every package of the repository."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Where each installed package's folder is in the repository (pyproject's package-dir).
FOLDERS = {
    "hopscope": ROOT / "hopscope",
    "hopscope.collectors": ROOT / "collectors",
    "hopscope.dashboard": ROOT / "dashboard",
}


def _packages_on_disk() -> set[str]:
    found = set()
    for name, folder in FOLDERS.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder)
            if rel.parts and rel.parts[0] in ("collectors", "dashboard") and name == "hopscope":
                continue  # hopscope/collectors, hopscope/dashboard: the symlinks to the top-level folders
            found.add(".".join((name, *rel.parts)))
    return found


def test_the_package_list_names_every_package_folder() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert listed == _packages_on_disk()


def test_the_wheel_installs_only_hopscope_so_collectors_and_dashboard_cannot_clash(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("hopscope-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {
        "hopscope",
        wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info",
    }
    for module in (
        "hopscope/collectors/otlp.py",
        "hopscope/dashboard/app.py",
        "hopscope/dashboard/pages/widgets/incident.py",
        "hopscope/catalog.yaml",
    ):
        assert module in names, module
