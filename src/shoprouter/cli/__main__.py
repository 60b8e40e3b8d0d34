"""`python -m shoprouter.cli`."""

import sys

from . import main

sys.exit(main())
