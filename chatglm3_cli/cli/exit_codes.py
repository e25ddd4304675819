"""Every exit code of the chatglm3 command, in one place (documented in the README)."""
from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1  # an unexpected error (a bug): rerun with --debug for the traceback
    USAGE = 2  # bad arguments, or nothing to do (no prompt)
    MODEL_ERROR = 3  # model file missing, not a GGUF, truncated, unsupported, failed to load
    INPUT_ERROR = 4  # an input file missing, binary or not UTF-8
    PROMPT_TOO_LONG = 5  # the prompt does not fit the context
    GENERATION_ERROR = 6  # llama.cpp failed while generating
    NETWORK_ERROR = 7  # the Hub (or HF_ENDPOINT) unreachable, or it refused the request
    DISK_FULL = 8  # not enough free space for a download (checked before it starts, or the disk filled up)
    DOWNLOAD_ERROR = 9  # a download broke off (partial kept) or failed its sha256 check
    PARTIAL_FAILURE = 10  # batch: the job ran, but some records failed (each has an error line)
    STRICT_INVALID_INPUT = 11  # batch --strict: invalid records in the input, nothing was run
    MANIFEST_MISMATCH = 12  # batch: resuming with another model or parameters (see --force)
    CONFIG_ERROR = 13  # the config file cannot be read or is not valid TOML
    OUTPUT_ERROR = 14  # an output file or directory cannot be written
    SERVE_ERROR = 15  # serve: cannot listen on the address (port in use, unknown host)
    CLUSTER_ERROR = 16  # --ray: Ray not installed, the cluster unreachable, or no worker could run
    TRANSLATE_FAILED = 20  # translate: some files or units could not be translated (each is listed)
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
    BROKEN_PIPE = 141  # stdout closed early, e.g. `| head` (128 + SIGPIPE)
