"""python -m hopper"""

from hopper.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
