"""`python -m keyrelay` runs the CLI."""

from keyrelay.cli import main

main()
