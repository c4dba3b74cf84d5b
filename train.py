"""`python train.py ...` = `trainkit train ...` (trainkit/commands/train.py)."""
import sys; from trainkit.commands.train import main  # noqa: E702
if __name__ == "__main__":
    sys.exit(main())
