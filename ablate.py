"""`python ablate.py ...` = `trainkit ablate ...` (trainkit/commands/ablate.py)."""
import sys; from trainkit.commands.ablate import main  # noqa: E702
if __name__ == "__main__":
    sys.exit(main())
