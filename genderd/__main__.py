"""``python -m genderd``: the command line (see :mod:`genderd.cli`)."""

from genderd.cli import main

main()
