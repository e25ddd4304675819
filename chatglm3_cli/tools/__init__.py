"""Running what the model asks for, always behind a consent callback.

functions.py turns Python functions (or OpenAI-style JSON specs) into tool specs and calls them
with literal arguments; interpreter.py runs ChatGLM3's code-interpreter cells in a Jupyter
kernel; chain.py reads a call, asks ``Approvals``, runs it and answers with the observation.
The engine only parses calls (engine/toolcalls.py); nothing here imports Typer or rich.
"""
