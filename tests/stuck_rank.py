"""``goldfish ARGV`` as one rank of a torchrun job in which rank 1 stops answering its peers.

Rank 1 sleeps (alive, never joining a collective) where ``STUCK_AT`` names: ``train`` (its first training
step) or ``audit`` (the gather of the results). Rank 0 must then stop with an error naming itself after
``--ddp-timeout`` seconds, and torchrun must end the job.
"""

import os
import sys
import time

from goldfish.cli import main


def _sleep_forever(*args, **kwargs):
    time.sleep(3600)


if os.environ["RANK"] == "1":
    if os.environ["STUCK_AT"] == "train":
        from goldfish.integrations.hf import GoldfishTrainer

        GoldfishTrainer.training_step = _sleep_forever
    else:
        import goldfish.audit.runner

        goldfish.audit.runner._gather = _sleep_forever
sys.exit(main(sys.argv[1:]))
