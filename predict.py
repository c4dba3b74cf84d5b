"""`python predict.py ...` = `trainkit predict ...` (trainkit/commands/predict.py)."""
import sys; from trainkit.commands.predict import main  # noqa: E702
if __name__ == "__main__":
    sys.exit(main())
