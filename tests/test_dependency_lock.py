"""requirements.lock: exact versions with hashes, compiled by uv from pyproject.toml's ranges.

make and CI install only from the lock (`pip install --require-hashes -r requirements.lock`, then
the project with `--no-deps`), so these tests check that the lock covers every declared
dependency within its range, that pip can verify every pin, that the Makefile reinstalls when the
lock changes, and that the environment running the tests is the one the lock describes.
"""

import os
import shutil
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"


def _lock_entries():
    """{name: (version, marker or None, hashes)} from the lock's `name==version ; marker` lines."""
    entries = {}
    logical = ""
    for raw in LOCK.read_text().splitlines():
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):  # blank, or uv's "# via" notes
            continue
        logical += " " + line.rstrip("\\").strip()
        if line.endswith("\\"):
            continue
        spec, *hash_parts = logical.strip().split(" --hash=")
        requirement, _, marker = spec.partition(";")
        name, _, version = requirement.strip().partition("==")
        entries[canonicalize_name(name)] = (
            version.strip(),
            Marker(marker.strip()) if marker.strip() else None,
            [h.strip() for h in hash_parts],
        )
        logical = ""
    return entries


def _declared_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]] + [
        Requirement(r) for r in project["optional-dependencies"]["dev"]
    ]


def test_every_declared_dependency_is_pinned_within_its_range():
    entries = _lock_entries()
    for requirement in _declared_requirements():
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{requirement} is missing from requirements.lock: run make lock"
        version = entries[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {name}=={version} outside {requirement}: run make lock"
        )


def test_every_pin_is_exact_and_hashed():
    entries = _lock_entries()
    assert len(entries) > 30  # the whole tree, not only the direct dependencies
    for name, (version, _marker, hashes) in entries.items():
        assert version and "*" not in version, name
        assert hashes and all(h.startswith("sha256:") and len(h) == 71 for h in hashes), name


def test_the_environment_running_the_tests_is_the_lock():
    """make installs from the lock; a pin that differs here means the venv was built otherwise."""
    mismatched = {}
    for name, (version, marker, _hashes) in _lock_entries().items():
        if marker is not None and not marker.evaluate():
            continue
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            mismatched[name] = (version, installed)
    assert mismatched == {}, f"(locked, installed); run make install: {mismatched}"


def test_make_reinstalls_when_the_lock_changes(tmp_path):
    for name in ("Makefile", "pyproject.toml", "requirements.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    stamp = tmp_path / "venv" / ".installed"
    stamp.parent.mkdir()
    stamp.touch()
    now = stamp.stat().st_mtime

    def make_says_up_to_date():
        return (
            subprocess.run(
                ["make", "-q", "install", "VENV=venv"], cwd=tmp_path, capture_output=True
            ).returncode
            == 0
        )

    for name in ("pyproject.toml", "requirements.lock"):
        os.utime(tmp_path / name, (now - 60, now - 60))
    assert make_says_up_to_date()

    os.utime(tmp_path / "requirements.lock", (now + 60, now + 60))
    assert not make_says_up_to_date()

    commands = subprocess.run(
        ["make", "-n", "install", "VENV=venv"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "pip install --quiet --require-hashes -r requirements.lock" in commands
    assert "pip install --quiet --no-deps -e ." in commands
