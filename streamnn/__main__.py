"""`python -m streamnn ...` is the `streamnn` command (for machines where pip's scripts are not on PATH)."""

from .runtime.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
