"""`chatglm3 serve`: an OpenAI-compatible HTTP server on the parallel decoder.

scheduler.py owns the decoder (one thread, continuous batching); protocol.py holds OpenAI's
request and response shapes; app.py is the ASGI app; server.py runs it under uvicorn. Nothing
here imports the CLI; cli/serve.py parses options and calls ``server.serve``.
"""
