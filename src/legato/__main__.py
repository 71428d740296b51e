"""``python -m legato``: the same command as ``legato``, for when the console script is not on PATH."""
from legato.cli import main

main()
