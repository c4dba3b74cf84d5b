"""`python compare.py ...` = `trainkit compare ...` (trainkit/commands/compare.py)."""
import sys; from trainkit.commands.compare import main  # noqa: E702
if __name__ == "__main__":
    sys.exit(main())
