"""``python -m latentebm.cli``: the ``latentebm`` command (``torchrun ... -m latentebm.cli train
ptb`` runs it on each process)."""

import sys

from latentebm.cli.entry import main

if __name__ == "__main__":
    sys.exit(main())
