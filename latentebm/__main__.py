"""``python -m latentebm``: the ``latentebm`` command (:func:`latentebm.cli.main`)."""

import sys

from latentebm.cli import main

if __name__ == "__main__":
    sys.exit(main())
