"""``python -m stylesift`` runs the command line."""

from stylesift.cli.main import main

main()
