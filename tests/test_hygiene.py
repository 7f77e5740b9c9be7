"""The test suite's own guards: a test that writes into the checkout fails."""

import pathlib
import shutil
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]

PROBE = '''
import pathlib

def test_writes_into_its_checkout():
    (pathlib.Path(__file__).resolve().parents[1] / "stray.txt").write_text("x")

def test_writes_under_tmp_path(tmp_path):
    (tmp_path / "fine.txt").write_text("x")
'''


def test_a_test_that_writes_into_the_checkout_fails(tmp_path):
    checkout = tmp_path / "checkout"
    (checkout / "tests").mkdir(parents=True)
    shutil.copy(REPO / "tests" / "conftest.py", checkout / "tests" / "conftest.py")
    (checkout / "tests" / "test_probe.py").write_text(PROBE)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(checkout)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "probe"], check=True)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "tests/test_probe.py"], cwd=checkout, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0
    assert "the test changed the checkout (git status): ['?? stray.txt']" in result.stdout
    assert "2 passed, 1 error" in result.stdout   # the tmp_path test is not blamed


HEAVY = ("jax", "flax", "tensorflow", "torch", "seqio")


def _modules_after(code: str, cwd) -> dict:
    """Which heavy modules a fresh interpreter has loaded after running `code`."""
    script = code + (f"\nimport json, sys\nprint('MODULES', json.dumps("
                     f"{{m: m in sys.modules for m in {HEAVY!r}}}))\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    import json

    line = [x for x in result.stdout.splitlines() if x.startswith("MODULES ")][-1]
    return json.loads(line[len("MODULES "):])


def test_light_commands_never_import_jax_flax_or_tensorflow(tmp_path):
    from test_vocab import spm_source
    from init_toys import train_lines

    source = spm_source(tmp_path / "src", "xlmr", train_lines("en-US", 200), 300)
    corpus = REPO / "tasks" / "corpora" / "libreoffice_help"
    help_of = ("import contextlib\nfrom jaxcpt.cli import main\n"
               "for argv in ([], ['vocab', 'extend'], ['wordvecs'], ['train']):\n"
               "    with contextlib.suppress(SystemExit):\n"
               "        main([*argv, '--help'])\n")
    extend = ("from jaxcpt.cli import main\n"
              f"assert main(['vocab', 'extend', '--model', {str(source)!r}, '--corpus', "
              f"{str(corpus)!r}, '--langs', 'el', '--vocab-size', '300', "
              f"'--max-sentences-per-lang', '100', '--out', {str(tmp_path / 'out')!r}]) == 0\n")
    for code in ("import jaxcpt.cli", help_of, extend):
        loaded = _modules_after(code, tmp_path)
        assert not any(loaded[m] for m in ("jax", "flax", "tensorflow", "torch")), (code, loaded)
    assert (tmp_path / "out" / "tokenizer.json").is_file()
    assert _modules_after("import jaxcpt, jaxcpt.models", tmp_path)["jax"]   # the check can fail


NATIVE_NOISE = ("I0000", "E0000", "W0000", "WARNING: All log messages before absl", "cuInit")


def test_a_tensorflow_command_starts_without_native_logging(tmp_path):
    """`jaxcpt data ...` loads TensorFlow (seqio) and jax: their start-up chatter stays hidden."""
    jaxcpt = pathlib.Path(sys.executable).parent / "jaxcpt"
    result = subprocess.run([str(jaxcpt), "data", "rates", "--corpus-dir",
                             str(REPO / "tasks" / "corpora" / "libreoffice_help")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "en-US" in result.stdout
    noise = [line for line in result.stderr.splitlines() if any(n in line for n in NATIVE_NOISE)]
    assert not noise, noise


def _layout_block() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    return readme.split("## Layout\n\n```\n", 1)[1].split("```", 1)[0]


def test_the_tree_matches_the_readme_layout():
    """Every package and top-level module of jaxcpt/ is in the README's Layout section, and every
    folder that section names exists (a moved or added package must update the README)."""
    layout = _layout_block()
    named = {line.split()[0] for line in layout.splitlines() if line and not line[0].isspace()}
    for entry in named - {"jaxcpt/*.py"}:
        assert (REPO / entry).exists(), f"README Layout names {entry}, which does not exist"
    packages = {f"jaxcpt/{p.name}/" for p in (REPO / "jaxcpt").iterdir()
                if (p / "__init__.py").is_file()}
    assert packages - named == set(), f"packages missing from the README Layout: {packages - named}"
    modules_line = next(x for x in layout.splitlines() if x.startswith("jaxcpt/*.py"))
    modules = {p.name for p in (REPO / "jaxcpt").glob("*.py")} - {"__init__.py"}
    missing = {m for m in modules if m not in modules_line}
    assert not missing, f"top-level modules missing from the README Layout: {missing}"


def test_the_data_package_never_imports_tasks():
    """Registration goes one way (`tasks` -> jaxcpt.data); jaxcpt itself never imports `tasks`."""
    import ast

    offenders = []
    for path in (REPO / "jaxcpt").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "tasks" or n.startswith("tasks.") for n in names):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_a_shipped_corpus_resolves_by_name_without_importing_tasks(tmp_path):
    code = ("from jaxcpt.data.pipeline import get_provider\n"
            "import sys\n"
            "assert len(get_provider('libreoffice_help_heldout.de').splits) == 1\n"
            "assert 'tasks' not in sys.modules, 'jaxcpt.data imported tasks'\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
