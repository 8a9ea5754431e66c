"""`python -m mouse ...` is the `mouse` command."""

from mouse.cli import main

main()
