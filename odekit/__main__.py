"""``python -m odekit`` runs the command line."""

from .cli import main

main()
