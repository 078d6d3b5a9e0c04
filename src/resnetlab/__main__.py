"""`python -m resnetlab ...` (what torchrun runs) is the same as the `resnetlab` command."""

import sys

from resnetlab.cli import main

sys.exit(main())
