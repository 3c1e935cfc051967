import os

import pytest
import torch

# Two threads on a loaded 2-core machine are ~5x slower than one (DEVELOPERS brief).
torch.set_num_threads(1)
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
