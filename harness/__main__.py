"""python -m harness: the attnbench Hydra app."""

from .app import main

main()
