"""``python -m medrec``: the same entry point as the ``medrec`` console script (used by torchrun)."""

from medrec.cli import main

if __name__ == "__main__":
    main()
