"""``python -m anovae``: the command-line interface (also what ``torchrun -m anovae`` runs)."""

from anovae.cli import main

if __name__ == "__main__":
    main()
