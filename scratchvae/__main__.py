"""``python -m scratchvae ...`` runs the command line (the same as the ``scratchvae`` script)."""
import sys

from .cli import main

sys.exit(main())
