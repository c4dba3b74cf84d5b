"""`python soup.py ...` = `trainkit soup ...` (trainkit/commands/soup.py)."""
import sys; from trainkit.commands.soup import main  # noqa: E702
if __name__ == "__main__":
    sys.exit(main())
