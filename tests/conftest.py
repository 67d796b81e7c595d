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
