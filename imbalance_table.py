"""`python imbalance_table.py ...` = `trainkit imbalance-table ...` (trainkit/commands/imbalance_table.py)."""
import sys; from trainkit.commands.imbalance_table import main  # noqa: E702
if __name__ == "__main__":
    sys.exit(main())
