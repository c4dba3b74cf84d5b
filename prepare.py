"""`python prepare.py ...` = `trainkit prepare ...` (trainkit/commands/prepare.py)."""
import sys; from trainkit.commands.prepare import main  # noqa: E702
if __name__ == "__main__":
    sys.exit(main())
