"""The engine: GGUF files in, answers out. Nothing here imports Typer or rich, and importing
this package loads nothing (llama.cpp is loaded on first use, by llama/runtime.py).

A map of the room, by what each module holds:

Models and prompts
  model.py         Model: opens a file, picks its family (ChatGLM3, GLM-4, any templated
                   model), builds prompt ids, and is the public interface the loops, the
                   server and the benchmarks use (answer_format, new_sampler, new_context...)
  families.py      ChatGLM3 and GLM-4, one small class each: official prompts, stop tokens
  gguf_file.py     reads GGUF metadata without llama.cpp
  tokenizer.py     ChatGLM3's exact SentencePiece tokenizer
  prompt.py        Message; ChatGLM3's and GLM-4's prompt ids; templated prompts
  jinja_render.py  a file's Jinja chat template, rendered sandboxed and bounded
  templates.py     --chat-template: Jinja files and llama.cpp's built-in formats
  messages.py      OpenAI-style chat messages to Messages (serve, batch)
  grammar.py       GBNF grammars: JSON Schema and label lists
  grammar_limits.py  bounds on schemas and label lists, checked before any conversion
  bytecache.py     an LRU cache bounded by bytes (the server's grammars)
  toolcalls.py     ChatGLM3's and GLM-4's tool-call text: the tools prompt, reading a call
                   (running tools is the tools/ package's job)

Decoding
  sequence.py      one answer's state machine (prompting, generating, done): UTF-8, the
                   metadata line, <|assistant|> segments, stop tokens and strings, limits,
                   drafts; every loop drives it
  answer.py        what a finished answer comes back as on every path: content, tool call,
                   finish reason
  generate.py      the one-conversation loop (run, chat) with its KV cache
  completion.py    Completion and Timings: what either loop returns for an answer
  decoder.py       the parallel loop (batch, translate, serve): many sequences in one context
  prefixes.py      the decoder's shared prompt prefixes (kept in the KV cache, LRU)
  promptcache.py   evaluated prompt prefixes kept on disk for later processes
  speculation.py   prompt-lookup drafts, the policy that decides when drafting pays, and
                   SpecStats (what drafting did)
  step_costs.py    decode-step times by row count, and the row padding they justify
  sampling.py      SamplingParams

llama.cpp and the machine
  llama/           the only package that calls llama.cpp's C API (its __init__ maps it):
                   runtime (loading, logging, abort), placement (weights, flash attention,
                   mmap), model, context (decode, Ctrl-C, saved states), sampler (grammar
                   resampling); grammar.py borrows llama-cpp-python's JSON Schema converter,
                   which is Python
  cpu.py           threads and OpenMP waiting
  memory.py        will a context fit in memory (checked before llama.cpp is asked)
  pagedrop.py      returns the pages of a mapped file that repacking left dead
"""
