"""`python zoo.py ...` = `trainkit zoo ...` (trainkit/commands/zoo.py)."""
import sys; from trainkit.commands.zoo import main  # noqa: E702
if __name__ == "__main__":
    sys.exit(main())
