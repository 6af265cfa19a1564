"""Keys and names of the dependency environments (no installs here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from headwater.runners.venvs import (
    DependencyError,
    Installer,
    VenvCache,
    default_cache_dir,
    normalise_requirements,
)


def test_normalise_sorts_dedupes_and_uses_pep503_names() -> None:
    assert normalise_requirements(
        [" Six ", "six", "Zope.Interface>=5", "", "requests [socks] >= 2"]
    ) == [
        "requests[socks]>=2",
        "six",
        "zope-interface>=5",
    ]


def test_markers_keep_their_spaces() -> None:
    assert normalise_requirements(["pkg >=1;  python_version < '3.9'  and  os_name == 'nt'"]) == [
        "pkg>=1; python_version < '3.9' and os_name == 'nt'"
    ]
    assert normalise_requirements(["Pkg @ https://example.com/pkg.whl"]) == [
        "pkg @ https://example.com/pkg.whl"
    ]


@pytest.mark.parametrize("bad", ["-r requirements.txt", "--index-url=http://x", "-e ."])
def test_installer_options_are_refused(bad: str) -> None:
    with pytest.raises(DependencyError, match="installer option"):
        normalise_requirements([bad])


def test_default_cache_dir_order(tmp_path: Path) -> None:
    assert default_cache_dir({"HEADWATER_CACHE_DIR": str(tmp_path)}) == tmp_path
    assert default_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "headwater"
    assert default_cache_dir({}) == Path.home() / ".cache" / "headwater"


async def test_key_depends_on_requirements_not_on_their_spelling(tmp_path: Path) -> None:
    cache = VenvCache(tmp_path, installer=Installer.PIP)
    a = await cache.key(sys.executable, ["six", "idna>=3"])
    b = await cache.key(sys.executable, ["IDNA >= 3", " six", "six"])
    c = await cache.key(sys.executable, ["six"])
    assert a == b != c
    assert len(a) == 64


async def test_key_depends_on_the_interpreter(tmp_path: Path) -> None:
    cache = VenvCache(tmp_path, installer=Installer.PIP)
    other = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    if not other.exists() or str(other) == sys.executable:
        pytest.skip("no second interpreter path to compare with")
    assert await cache.key(sys.executable, ["six"]) != await cache.key(str(other), ["six"])


async def test_a_non_python_interpreter_is_a_clear_error(tmp_path: Path) -> None:
    cache = VenvCache(tmp_path, installer=Installer.PIP)
    with pytest.raises(DependencyError, match="does not look like a python interpreter"):
        await cache.key("/bin/false", ["six"])
