"""Where the command line was: ``python -m brims_rl.cli`` and ``brims-rl`` scripts installed
before it moved keep working. The command line is the application's, :mod:`agents.cli`."""

import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run :func:`agents.cli.main`."""
    # Imported on call: the library never imports the application (see brims_rl/__init__.py).
    from agents.cli import main as application_main

    return application_main(argv)


if __name__ == "__main__":
    sys.exit(main())
