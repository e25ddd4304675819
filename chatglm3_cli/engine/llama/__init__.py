"""The only package that calls llama.cpp's C API (llama-cpp-python's low-level ctypes
bindings). Importing it loads nothing: ``runtime.llama()`` loads the library on first use.

  runtime.py    loading the library, its log (the last error, context buffer sizes, stderr
                of C code), Ctrl-C's abort flag, llama-cpp-python's version
  placement.py  where weights go and how contexts attend: flash attention, the KV cache type,
                CPU_REPACK instead of AMX, mapping or reading the file
  model.py      LlamaModel (weights and vocabulary) and llama.cpp's built-in chat templates
  context.py    LlamaContext: the KV cache, decode calls cut at aligned positions, Ctrl-C
                during them, one sequence's state saved and restored (the prompt cache)
  sampler.py    Sampler: the sampler chain, with a grammar checked after sampling

Outside this package, grammar.py borrows llama-cpp-python's JSON Schema converter (pure Python,
no C call), and bench/raw.py and scripts/ drive llama.cpp directly on purpose: they measure it
without our engine.
"""
