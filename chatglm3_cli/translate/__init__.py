"""Translating whole files while keeping their structure (Markdown, subtitles, plain text).

Library only (no Typer, no rich): ``pipeline.translate`` takes the files, a way to open the
model and the settings, and returns a ``Summary``; the CLI parses arguments and renders.
"""
