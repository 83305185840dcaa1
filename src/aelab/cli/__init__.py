"""Command-line interface: thin typer commands over importable functions."""
