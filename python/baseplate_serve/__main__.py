"""``python -m baseplate_serve``: the same as the ``baseplate-serve`` command."""
from baseplate_serve._cli import main

if __name__ == "__main__":
    main()
