"""The command-line layer: one module per subcommand (``trainkit <name>``), each with ``main()``.

The top-level ``*.py`` scripts of the checkout are two-line wrappers around these modules.
"""
