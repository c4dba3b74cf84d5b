"""`python tune_loader.py ...` = `trainkit tune-loader ...` (trainkit/commands/tune_loader.py)."""
import sys; from trainkit.commands.tune_loader import main  # noqa: E702
if __name__ == "__main__":
    sys.exit(main())
