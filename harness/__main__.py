"""python -m harness: the attnbench Hydra app."""

from harness.running.app import main

if __name__ == "__main__":
    main()
