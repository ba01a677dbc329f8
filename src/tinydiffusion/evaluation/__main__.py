"""`python -m tinydiffusion.evaluation train-classifier | ship-statistics`."""

import sys

from . import main

sys.exit(main())
