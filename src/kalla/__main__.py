"""``python -m kalla`` is the ``kalla`` command."""

from .cli import main

main()
