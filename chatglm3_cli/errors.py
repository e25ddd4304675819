"""Typed errors of the library. Each carries a one-line message and, where there is one, the
next thing the user can do (``hint``). The CLI maps them to exit codes in one place."""
from __future__ import annotations


class ChatGLM3Error(Exception):
    """Base of every error the library raises on purpose."""

    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__

    def describe(self) -> str:
        """The message and, in parentheses, the hint: how every error is shown in one line."""
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(ChatGLM3Error):
    """The user's config file cannot be read or parsed."""

    hint = "fix or delete the config file"


class ModelError(ChatGLM3Error):
    """A model file that cannot be used."""


class ModelNotFoundError(ModelError):
    hint = "check the path, or pass another model with -m/--model"


class ModelFormatError(ModelError):
    """Not a GGUF file, corrupt, or truncated."""

    hint = "the file is damaged or incomplete: download it again"


class UnsupportedModelError(ModelError):
    """A GGUF that this build of llama.cpp (or this tool) cannot run."""


class ModelLoadError(ModelError):
    """llama.cpp refused to load the file, or to create a context for it."""


class InsufficientMemoryError(ModelLoadError):
    """A context whose estimated KV cache and compute buffers do not fit in free memory
    (refused before llama.cpp allocates them and the OOM killer ends the process)."""


class PromptTooLongError(ChatGLM3Error):
    def __init__(self, n_prompt: int, n_ctx: int) -> None:
        super().__init__(
            f"the prompt is {n_prompt} tokens but the context holds {n_ctx} "
            f"(at least one token must be left for the answer)",
            hint="shorten the input or raise --ctx",
        )
        self.n_prompt = n_prompt
        self.n_ctx = n_ctx


class InterpreterError(ChatGLM3Error):
    """The code interpreter cannot run: its packages are missing, its working directory is
    unusable, or the Python kernel did not start."""

    hint = "the code interpreter needs jupyter_client and ipykernel: pip install '.[code]' in the chatglm3 folder"


class InputError(ChatGLM3Error):
    """Input text that cannot be used: a missing, binary or non-UTF-8 file."""


class GenerationError(ChatGLM3Error):
    """llama.cpp failed while decoding."""


class InternalError(ChatGLM3Error):
    """A bug of ours, not a problem with the input (shown with its type, to be reported)."""

    hint = "please report this, with the command that caused it"


class GrammarError(GenerationError):
    """A grammar that llama.cpp cannot parse, or an output that does not satisfy it."""


# Models from the Hugging Face Hub -----------------------------------------------------------

class ModelNotOnHubError(ModelNotFoundError):
    """An unknown repo, quant or file on the Hub (the message lists what exists)."""

    hint = "check the name, or list a repo's quants with: chatglm3 pull REPO --list"


class OfflineModelError(ModelNotFoundError):
    """Offline (--offline / HF_HUB_OFFLINE=1) and the model is not on disk."""

    hint = "download it first with `chatglm3 pull`, or drop --offline / HF_HUB_OFFLINE"


class NetworkError(ChatGLM3Error):
    """The Hub (or the mirror in HF_ENDPOINT) cannot be reached, or refused the request."""

    hint = ("check the connection; behind a firewall or in China, set HF_ENDPOINT to a mirror "
            "such as https://hf-mirror.com; models already downloaded work with --offline")


class HubAccessError(NetworkError):
    """The Hub refused access (HTTP 401/403): a gated or private repo. Never retried."""

    hint = "accept the model's license on its Hub page and set HF_TOKEN"


class HubProtocolError(NetworkError):
    """The endpoint sent something the Hub never sends: an invalid commit id, an unsafe file path,
    malformed metadata. Never retried; nothing it sent was used as a path."""

    hint = "the endpoint (HF_ENDPOINT or --endpoint) does not behave like the Hugging Face Hub: check it"


class EndpointError(ChatGLM3Error):
    """An HF_ENDPOINT / --endpoint value that is not an http(s) URL."""

    hint = "give a URL such as https://huggingface.co or https://hf-mirror.com"


class DownloadError(ChatGLM3Error):
    """A download that broke off; the partial file is kept and resumed by the next run."""

    hint = "run the same command again to resume the download"


class IntegrityError(DownloadError):
    """Downloaded bytes that do not match the size or sha256 the Hub announced (deleted)."""

    hint = "run the command again to download it afresh; if it repeats, check the mirror (HF_ENDPOINT)"


class UnsafePathError(DownloadError):
    """A path in the model cache that resolves outside it (a planted symlink): never written."""

    hint = "check the model cache (HF_HUB_CACHE) for symlinks that point elsewhere"


class RangeMismatchError(DownloadError):
    """The server answered a resumed download with other bytes than the ones asked for."""

    hint = ("the partial file is kept: run the same command again; if it repeats, remove the partial "
            "with `chatglm3 models rm MODEL` or use another endpoint")


class DownloadInProgressError(ChatGLM3Error):
    """Another process is downloading the file (it holds the download lock)."""

    hint = "wait for that download to finish, or stop it first"


class DiskFullError(ChatGLM3Error):
    """Not enough free space for a download (checked before it starts, or the disk filled up)."""

    hint = "free some space, or point HF_HUB_CACHE (or HF_HOME) at a bigger disk"


# Batch jobs ----------------------------------------------------------------------------------

class InvalidRecordError(InputError):
    """One record of a batch input that cannot be run (bad JSON, missing field, bad schema...)."""


class InvalidJobsError(InputError):
    """--strict: the batch input has invalid records, so nothing was started."""

    hint = "fix the lines listed above, or drop --strict to run the valid records"


class ManifestMismatchError(ChatGLM3Error):
    """Resuming a batch job with another model or other parameters than it was started with."""

    hint = "use the same model and options, write to another -o file, or pass --force to mix them"


class ResultsInUseError(ChatGLM3Error):
    """Another chatglm3 batch is writing the same results file right now."""

    hint = "wait for it to finish (or stop it), or write to another -o file"


class OutputFormatError(ChatGLM3Error):
    """A batch answer that does not parse as its task requires (a label, JSON valid against the schema)."""


class BatchFailedError(ChatGLM3Error):
    """A batch job that ran to the end with some records failed (each has an error line)."""

    hint = "see the error lines in the results; rerun the same command with --retry-errors to retry them"


# Translating files -----------------------------------------------------------------------------

class UnsupportedFormatError(InputError):
    """A file of a type translate does not know (the message lists the supported types)."""


class SubtitleFormatError(InputError):
    """A malformed .srt or .vtt file; the message gives the line number."""


class OutputWriteError(ChatGLM3Error):
    """An output file or directory that cannot be written."""

    hint = "check the permissions, or write elsewhere with -o DIR"


class TranslationFailedError(ChatGLM3Error):
    """A translate run that finished with some files or units not translated (each is listed)."""

    hint = "see the list above; run the same command again to retry only what failed"


# The HTTP server ---------------------------------------------------------------------------------

class ServeError(ChatGLM3Error):
    """`serve` cannot listen (an address in use or unknown), or cannot take a request now."""


class InsecureBindError(ServeError):
    """A non-loopback --host without an API key."""

    hint = "add --api-key KEY (or set CHATGLM3_API_KEY), or listen on 127.0.0.1"


class QueueFullError(ServeError):
    """Every sequence is busy and the queue is full: the client should retry later (HTTP 429)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("the server is busy: too many requests are waiting")
        self.retry_after = retry_after


class ShuttingDownError(ServeError):
    """The server is draining (SIGTERM, Ctrl-C) or its decoder stopped: no new requests (HTTP 503)."""


# Running on a Ray cluster (--ray) -----------------------------------------------------------------

class ClusterError(ChatGLM3Error):
    """--ray: the cluster cannot be reached, or its workers cannot run the job at all."""

    hint = "check the address (ray status on the head node) and the workers' logs"


class RayNotInstalledError(ClusterError):
    """--ray without the optional Ray dependency."""

    hint = "install it with: pip install '.[ray]' in the chatglm3 folder"


class ModelMismatchError(ModelError):
    """A worker whose model file is not the driver's (another sha256): a cluster never mixes models."""

    hint = "give every node the same file (a shared path), or a model name that each node pulls"
