"""`python -m edlm ...` == `edlm ...` (handy under torchrun: `torchrun --nproc_per_node 2 -m edlm train ...`)."""

import sys

from edlm.cli import main

if __name__ == "__main__":
    sys.exit(main())
