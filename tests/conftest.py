import os

import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", max_examples=15, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=30, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="session")
def prices():
    """The bundled S&P 500 and NASDAQ daily closes (a DataFrame; tests copy before they change it)."""
    from sciffusion.datasets import market_prices

    return market_prices()


@pytest.fixture(scope="session")
def small_train() -> list[str]:
    """CLI settings for a tiny, quick finance training run (with --max-steps 10)."""
    return ["--set", "model.net.channels=[8,8]", "--set", "trainer.progress=false", "--set", "data.val_days=60",
            "--set", "trainer.val_every=10", "--set", "trainer.checkpoint_every=10"]
