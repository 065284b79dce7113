"""The torch threads of a stage computed beside others (``aelab.stages.run_parallel``), following its share.

``run_parallel`` gives every worker process one shared integer, the threads each running stage may use now
(all of them divided by the stages running), and updates it whenever a stage starts or ends.  A long computation
calls ``follow()`` now and then (a training every ``aelab.train.LOSS_CHECK_EVERY`` steps, a part of the latent
study after each density), so that a stage that started beside another one takes the second thread when the
other ends, instead of leaving that core idle until it is done itself.  The share applies to torch's threads and
to the BLAS under NumPy and scikit-learn (the latent study's mixtures).  Outside ``run_parallel`` ``follow()``
does nothing.
"""

from __future__ import annotations

import torch

_share = None  # a multiprocessing.Value("i") in a worker process of run_parallel


def share_with(value) -> None:
    """The worker processes' initializer: follow ``value`` from now on."""
    global _share
    _share = value


def follow() -> int:
    """Set torch's and the BLAS's threads to this process's share now (when it has one); returns torch's threads
    in use."""
    if _share is not None:
        n = max(1, int(_share.value))
        if n != torch.get_num_threads():
            from threadpoolctl import threadpool_limits

            torch.set_num_threads(n)
            threadpool_limits(limits=n, user_api="blas")  # process-wide until the worker's own limit is undone
    return torch.get_num_threads()
