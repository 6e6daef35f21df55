"""`python -m edgert` runs the command line."""

from .cli import main

main()
