"""`python evaluate.py ...` = `trainkit evaluate ...` (trainkit/commands/evaluate.py)."""
import sys; from trainkit.commands.evaluate import main  # noqa: E702
if __name__ == "__main__":
    sys.exit(main())
