"""One module per CLI subcommand (see bench/cli.py)."""
