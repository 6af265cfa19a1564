"""``python -m headwater``: the same command line as ``headwater``."""

from headwater.cli import main

if __name__ == "__main__":
    main()
