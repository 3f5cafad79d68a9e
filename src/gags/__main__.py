"""``python -m gags`` (and ``torchrun -m gags``) runs the ``gags`` command."""

from gags.cli import main

main()
