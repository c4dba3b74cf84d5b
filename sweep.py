"""`python sweep.py ...` = `trainkit sweep ...` (trainkit/commands/sweep.py)."""
import sys; from trainkit.commands.sweep import main  # noqa: E702
if __name__ == "__main__":
    sys.exit(main())
