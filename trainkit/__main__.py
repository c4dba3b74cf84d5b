"""``python -m trainkit ...`` = the ``trainkit`` console script (trainkit/commands/main.py)."""
import sys

from trainkit.commands.main import main

if __name__ == "__main__":
    sys.exit(main())
