"""``python -m bench``: the storage benchmark (bench/core.py; ``pas bench`` runs the same)."""
import sys

from .core import main

sys.exit(main())
