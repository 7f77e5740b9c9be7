"""The gin configs ship with the package: a wheel installed outside the checkout runs
`jaxcpt train --gin_file=gin/runs/debug_cpu.gin` from any working directory, and a checkout
(editable install) still resolves gin files and includes against its top-level gin/.

The wheel and the editable install are built from a temporary copy of the source tree (setuptools
writes build/ and *.egg-info next to the source) into venvs under tmp_path. Nothing is downloaded:
the venvs see the dependencies of the running interpreter (.venv) through a .pth file.
`venv --system-site-packages` would not do: run from a venv, it exposes the *base* interpreter's
site-packages (pyenv's global one here), not .venv's.
"""

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import zipfile

import pytest
import setuptools

from jaxcpt.errors import JaxcptError
from jaxcpt.train.commands import parse_gin

REPO = pathlib.Path(__file__).resolve().parents[1]
SOURCE = ("pyproject.toml", "README.md", "jaxcpt", "gin", "tasks")
SHIPPED = sorted(str(p.relative_to(REPO)) for p in (REPO / "gin").rglob("*.gin"))


def test_the_checkout_resolves_gin_files_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    config = parse_gin(["gin/runs/debug_cpu.gin"], [f"MODEL_DIR = '{run}'"])
    assert config.model_dir == str(run) and config.steps == 60
    # a user's own file (a real path) including shipped fragments both ways
    (tmp_path / "own.gin").write_text("include 'models/xlmr_tiny.gin'\n"
                                      "include 'gin/runs/debug_cpu.gin'\nTrainConfig.steps = 7\n")
    config = parse_gin(["own.gin"], [f"MODEL_DIR = '{run}'"])
    assert config.steps == 7
    with pytest.raises(JaxcptError, match="gin file not found") as err:
        parse_gin(["gin/nope.gin"], [])
    assert "\n" not in str(err.value)


def test_the_package_list_covers_the_tree():
    """pyproject.toml lists the packages explicitly (to map gin/ onto jaxcpt.gin): a new
    subpackage (or gin/ folder) must be added there or the wheel would lack it."""
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = setuptools.find_namespace_packages(where=str(REPO), include=["jaxcpt*", "tasks*"])
    folders = setuptools.find_namespace_packages(where=str(REPO / "gin"))
    assert sorted(cfg["packages"]) == sorted(
        [*found, "jaxcpt.gin", *(f"jaxcpt.gin.{f}" for f in folders)])
    assert cfg["package-dir"] == {"jaxcpt.gin": "gin"}
    assert cfg["package-data"]["jaxcpt.gin"] == ["**/*.gin"]


def _source_copy(dest: pathlib.Path) -> pathlib.Path:
    dest.mkdir()
    for name in SOURCE:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, dest / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        else:
            shutil.copy2(REPO / name, dest / name)
    return dest


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", JAX_PLATFORMS="cpu")
    return env


def _run(argv, cwd, timeout=300) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in argv], cwd=cwd, env=_env(), capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, (argv, result.stdout[-3000:], result.stderr[-3000:])
    return result


def _venv(path: pathlib.Path) -> pathlib.Path:
    """A venv without pip whose imports fall back on the running interpreter's packages."""
    _run([sys.executable, "-m", "venv", "--without-pip", path], cwd=path.parent)
    python = path / "bin" / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                cwd=path.parent).stdout.strip()
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (pathlib.Path(site) / "jaxcpt_test_deps.pth").write_text("".join(f"{p}\n" for p in ours))
    return python


def _pip_install(python: pathlib.Path, *args, cwd) -> None:
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
          *args], cwd=cwd)


PROBE = textwrap.dedent("""
    import pathlib, sys
    import jaxcpt
    from jaxcpt.errors import JaxcptError
    from jaxcpt.train.commands import GIN_DIR, parse_gin
    print(pathlib.Path(jaxcpt.__file__).resolve())
    print(GIN_DIR)
    pathlib.Path("own.gin").write_text("include 'models/xlmr_tiny.gin'\\n"
                                       "include 'runs/debug_cpu.gin'\\nTrainConfig.steps = 7\\n")
    assert parse_gin(["own.gin"], ["MODEL_DIR = 'run'"]).steps == 7
    assert parse_gin(["gin/adapt/demo_languages.gin"],
                     ["MODEL_DIR = 'run'", "INIT_FROM = 'init'"]).model_dir == "run"
    try:
        parse_gin(["gin/nope.gin"], [])
    except JaxcptError as err:
        print(err)
""")


@pytest.mark.slow
def test_a_wheel_installed_outside_the_checkout_ships_the_gin_files(tmp_path):
    src = _source_copy(tmp_path / "src")
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--no-index", "-w", wheels, src], cwd=tmp_path)
    (wheel,) = wheels.glob("jaxcpt-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"jaxcpt/{rel}" for rel in SHIPPED} <= names, sorted(names)
    assert not [n for n in names if n.startswith("gin/")]  # would shadow gin-config's `gin`
    assert any(n.startswith("tasks/corpora/") and n.endswith(".tsv") for n in names)

    python = _venv(tmp_path / "venv")
    _pip_install(python, wheel, cwd=tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    site = tmp_path / "venv" / "lib"
    probe = _run([python, "-c", PROBE], cwd=work).stdout.splitlines()
    module, gin_dir, missing = pathlib.Path(probe[0]), pathlib.Path(probe[1]), probe[2]
    assert module.is_relative_to(site) and not module.is_relative_to(REPO), module
    assert gin_dir == module.parent / "gin" and (gin_dir / "runs" / "debug_cpu.gin").is_file()
    assert "gin/nope.gin: gin file not found" in missing

    result = _run([tmp_path / "venv" / "bin" / "jaxcpt", "train",
                   "--gin_file=gin/runs/debug_cpu.gin", f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
                   "--dry-run"], cwd=work)
    assert "embeddings/word/embedding" in result.stdout, result.stdout[-2000:]
    assert not (tmp_path / "run").exists()


def test_an_editable_install_uses_the_checkouts_gin_dir(tmp_path):
    """What `make install` builds (pip install -e) from this pyproject.toml, on a copy."""
    src = _source_copy(tmp_path / "src")
    python = _venv(tmp_path / "venv")
    _pip_install(python, "--no-build-isolation", "-e", src, cwd=tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    probe = _run([python, "-c", PROBE], cwd=work).stdout.splitlines()
    assert pathlib.Path(probe[0]) == src / "jaxcpt" / "__init__.py"
    assert pathlib.Path(probe[1]) == src / "gin"
    assert "gin/nope.gin: gin file not found" in probe[2]
