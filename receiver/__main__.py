"""``python -m receiver``: the ``paheko-recyclic`` command (where the script is not on PATH)."""

from receiver.cli import main

main()
