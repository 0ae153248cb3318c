"""`python -m monitor` runs the same CLI as the `monitor` console script."""

import sys

from monitor.cli import main

sys.exit(main())
