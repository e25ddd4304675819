"""The command-line layer: parses, calls the library, renders. Typer and rich live here only."""
