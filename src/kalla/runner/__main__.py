"""``python -m kalla.runner`` is ``kalla serve``."""

from .cli import serve

if __name__ == "__main__":
    serve(prog_name="kalla serve")
