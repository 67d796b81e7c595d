from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a test module: the CPU is shared, and two threads contending with other jobs
    run several times slower. Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def vlm_folder(tmp_path_factory) -> Path:
    """A random tiny LLaVA-NeXT-Video folder with its tokenizer (tests/_tiny_models.py), one per test module."""
    from _tiny_models import vlm_folder as tiny_vlm_folder

    return tiny_vlm_folder(tmp_path_factory.mktemp("vlm"))


@pytest.fixture(scope="module")
def vlm(vlm_folder):
    """That folder loaded as a judge, reading 4 frames."""
    from physalign.judges.vlm import VLMJudge

    return VLMJudge.from_pretrained(vlm_folder, frames=4)
