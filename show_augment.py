"""`python show_augment.py ...` = `trainkit show-augment ...` (trainkit/commands/show_augment.py)."""
import sys; from trainkit.commands.show_augment import main  # noqa: E702
if __name__ == "__main__":
    sys.exit(main())
