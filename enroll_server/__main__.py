"""``python -m enroll_server`` = ``hyperver serve``."""
import sys

from hyperver.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
