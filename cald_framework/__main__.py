"""``python -m cald_framework``."""

import sys

from .cli import main

sys.exit(main())
