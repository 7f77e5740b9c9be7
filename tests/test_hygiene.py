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
