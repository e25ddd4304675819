"""Options shared by the commands that run a model, declared once, in groups.

A group is a dataclass whose fields are the options (``Annotated[type, typer.Option(...)]``) and
whose methods do what those options mean. A command asks for a group with one parameter whose
default is ``Group.options(...)``; ``@with_options`` then shows the group's options in --help
(in their own panel) and hands the command one built object instead of a dozen values:

    @handle_errors            # outermost: errors raised while building a group are mapped too
    @with_options
    def run(prompt: ...,
            model: ModelArgs = ModelArgs.options(),
            sampling: SamplingParams = SamplingArgs.options(),
            system: SystemArgs = SystemArgs.options()) -> None:
        with model.open() as m:                      # resolves, downloads, loads
            m.generate(..., params=sampling)         # the engine's SamplingParams, validated

Per command, ``.options()`` takes
- ``name=VALUE``: another default for that option (translate: ``temperature=0.0``), shown as
  ``[default: VALUE]``;
- ``name=Annotated[...]``: another declaration of that option (batch's per-sequence --ctx), or
  an optional one the group leaves out unless asked (``parallel``);
- ``omit=("ctx", ...)``: options this command does not take (their field default is used).

Adding a flag to every command of a group is one edit: a field here, plus its use in the
group's method (``ModelArgs.open`` passes model flags on to the engine). A new command takes
the groups it needs as parameters, as above. An option one command alone has stays in that
command's signature. Help text never spells defaults out by hand: Typer shows the real default,
or ``show_default="..."`` describes one that is computed (e.g. "the model's").
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import os
import typing
from typing import TYPE_CHECKING, Annotated, Any, Callable, ClassVar, Optional, TypeVar

import typer

from ..engine.sampling import DEFAULT_TEMPERATURE, DEFAULT_TOP_P, SamplingParams

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.model import Model
    from ..engine.templates import ChatTemplate
    from ..scale.cluster import ClusterOptions
    from ..scale.workers import LoadOptions, ModelRef

F = TypeVar("F", bound=Callable[..., Any])

# Options used alone, outside the groups (pull, models). ---------------------------------------

MODEL_HELP = ("Model: a .gguf path, an alias (chatglm3-6b, chatglm3-6b-128k, glm-4-9b-chat) with an "
              "optional :QUANT, or a Hub repo (owner/repo[:QUANT] or owner/repo/file.gguf); downloaded "
              "on first use.")

Offline = Annotated[bool, typer.Option(
    "--offline", help="Never use the network: only models already on disk (also HF_HUB_OFFLINE=1).")]
Endpoint = Annotated[Optional[str], typer.Option(
    "--endpoint", envvar="HF_ENDPOINT", show_envvar=True, metavar="URL",
    show_default="https://huggingface.co",
    help="Hugging Face Hub endpoint or mirror, e.g. https://hf-mirror.com.")]


def parallel_option(what: str) -> Any:
    """--parallel/-p for a command that decodes several sequences at once (``what`` they are)."""
    return Annotated[Optional[int], typer.Option(
        "--parallel", "-p", min=1, max=255, metavar="N", show_default="4 on a CPU, 8 with a GPU",
        help=f"{what} decoded at once.")]


# Per-sequence context, for the commands that decode several sequences in one context.
SequenceCtx = Annotated[Optional[int], typer.Option(
    "--ctx", "-c", min=64, metavar="TOKENS", show_default="the model's, at most 4096",
    help="Context size of each parallel sequence, in tokens.")]


# The machinery -----------------------------------------------------------------------------------

class Group:
    """One command's use of an option group: which options, with which defaults and declarations."""

    def __init__(self, cls: type[OptionGroup], omit: tuple[str, ...] = (), **changes: Any) -> None:
        self.cls = cls
        hints = typing.get_type_hints(cls, include_extras=True)
        optional = getattr(cls, "OPTIONAL", ())
        self.parameters: list[inspect.Parameter] = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]  # every group is a dataclass
            if not f.init:
                continue
            change = changes.pop(f.name, _UNSET)
            is_declaration = typing.get_origin(change) is Annotated
            if f.name in omit or (f.name in optional and change is _UNSET):
                continue
            annotation = change if is_declaration else hints[f.name]
            new_default = change is not _UNSET and not is_declaration
            default = change if new_default else f.default
            self.parameters.append(inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                annotation=_in_panel(annotation, cls.PANEL, show_value=new_default)))
        if changes:
            raise TypeError(f"{cls.__name__} has no options {sorted(changes)}")

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parameters]

    def build(self, values: dict[str, Any]) -> Any:
        return self.cls.from_options(**values)


_UNSET: Any = object()


def _in_panel(annotation: Any, panel: str, *, show_value: bool = False) -> Any:
    """The same ``Annotated[...]`` with its typer.Option shown under ``panel`` in --help;
    ``show_value``: a command gave the option another default, which --help shows as it is
    (not the group's description of its own default, e.g. "when the model ends its turn")."""
    base, *meta = typing.get_args(annotation)
    meta = [copy.copy(m) for m in meta]
    for m in meta:
        if isinstance(m, typer.models.OptionInfo):
            if m.rich_help_panel is None:
                m.rich_help_panel = panel
            if show_value and isinstance(m.show_default, str):
                m.show_default = True
    return Annotated.__class_getitem__((base, *meta))  # type: ignore[attr-defined]


class OptionGroup:
    """Base of the groups: ``options()`` declares a command's use, ``from_options`` builds."""

    PANEL: ClassVar[str] = "Options"
    OPTIONAL: ClassVar[tuple[str, ...]] = ()  # left out unless a command declares them

    @classmethod
    def options(cls, omit: tuple[str, ...] = (), **changes: Any) -> Any:
        # Any: it stands as the default of a parameter typed as what from_options builds
        return Group(cls, omit, **changes)

    @classmethod
    def from_options(cls, **values: Any) -> Any:
        return cls(**values)


def with_options(func: F) -> F:
    """Expand each parameter whose default is a ``Group`` into that group's options (for Typer),
    and call ``func`` with the built object in their place."""
    sig = inspect.signature(func, eval_str=True)
    groups: dict[str, Group] = {}
    params: list[inspect.Parameter] = []
    for p in sig.parameters.values():
        if isinstance(p.default, Group):
            groups[p.name] = p.default
            params.extend(p.default.parameters)
        else:
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))
    names = [p.name for p in params]
    clash = {n for n in names if names.count(n) > 1}
    if clash:
        raise TypeError(f"{func.__name__}: options declared twice: {sorted(clash)}")

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        if any(g.cls is ModelArgs for g in groups.values()):
            _configured_defaults(kwargs, {p.name: p.default for g in groups.values() for p in g.parameters})
        for name, group in groups.items():
            kwargs[name] = group.build({n: kwargs.pop(n) for n in group.names})
        return func(**kwargs)

    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper  # type: ignore[return-value]


def _configured_defaults(kwargs: dict[str, Any], defaults: dict[str, Any]) -> None:
    """The model's own settings from the config file ([models.NAME]: chat template, system
    prompt, sampling) fill the options the command line left at the command's default. (An
    option typed with exactly its default value counts as left: Typer does not tell them apart.)"""
    from .. import config
    from ..hub.resolve import model_name

    settings = config.load().settings(model_name(kwargs.get("model")))
    if settings is None:
        return
    wanted: dict[str, Any] = {"chat_template": settings.chat_template, **settings.sampling}
    if kwargs.get("system_file") is None:
        wanted["system"] = settings.system
    for key, value in wanted.items():
        if value is not None and key in kwargs and kwargs[key] == defaults.get(key):
            kwargs[key] = value


ChatTemplateOpt = Annotated[Optional[str], typer.Option(
    "--chat-template", metavar="FILE|NAME", show_default="the file's own",
    help="Chat format for a GGUF without one (or to replace it): a Jinja file, or a llama.cpp "
         "built-in name such as chatml, llama3, gemma, mistral-v7, phi3. ChatGLM3 files always "
         "use the official format.")]
SystemOpt = Annotated[Optional[str], typer.Option("--system", "-s", metavar="TEXT", help="System prompt.")]


# The groups ----------------------------------------------------------------------------------------

# llama.cpp's own ceiling (GGML_MAX_N_THREADS); libgomp fails or crashes far past it.
GGML_MAX_THREADS = 512


def max_threads() -> int:
    """The most --threads may ask for: four per CPU (more only waits), at most llama.cpp's 512."""
    return min(GGML_MAX_THREADS, 4 * (os.cpu_count() or 1))


@dataclasses.dataclass(frozen=True)
class ModelArgs(OptionGroup):
    """Which model, and how to load it: the options of every command that runs a model."""

    PANEL: ClassVar[str] = "Model"
    OPTIONAL: ClassVar[tuple[str, ...]] = ("parallel",)

    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", envvar="CHATGLM3_MODEL", show_envvar=True, metavar="MODEL",
        show_default="the config file's model, else chatglm3-6b:Q4_K_M", help=MODEL_HELP)] = None
    ctx: Annotated[Optional[int], typer.Option(
        "--ctx", "-c", min=16, metavar="TOKENS", show_default="the model's, at most 8192",
        help="Context size in tokens.")] = None
    parallel: Optional[int] = None  # declared per command with parallel_option(...)
    threads: Annotated[Optional[int], typer.Option(
        "--threads", min=1, metavar="N", show_default="one per physical core this process may use",
        help="CPU threads.")] = None
    gpu_layers: Annotated[Optional[int], typer.Option(
        "--gpu-layers", metavar="N", show_default="all with a GPU build, else 0",
        help="Layers to offload to the GPU; -1 = all, 0 = none.")] = None
    chat_template: ChatTemplateOpt = None
    cache_type: Annotated[str, typer.Option(
        "--cache-type", metavar="TYPE",
        help="KV cache type, for K and V: f16, q8_0 (about half the memory) or q4_0 (about a "
             "quarter); quantized caches turn on flash attention.")] = "f16"
    speculate: Annotated[Optional[bool], typer.Option(
        "--speculate/--no-speculate", show_default="off; CHATGLM3_SPECULATE=auto: on while it measures faster",
        help="Prompt-lookup speculation: guess the next tokens from the prompt and the answer so "
             "far and check them in the same decode call (the answer does not change).")] = None
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Show llama.cpp's own log on stderr.")] = False
    offline: Offline = False
    endpoint: Endpoint = None
    _path: list[str] = dataclasses.field(default_factory=list, init=False, repr=False, compare=False)

    def path(self) -> str:
        """The model file: -m/CHATGLM3_MODEL, the config file, the default; a Hub model is
        downloaded on first use (progress on stderr). Resolved once per command."""
        if not self._path:
            from .common import resolve_model_path

            self._path.append(resolve_model_path(self.model, offline=self.offline, endpoint=self.endpoint))
        return self._path[0]

    def template(self) -> "ChatTemplate | None":
        """--chat-template read and checked (a file is read, a name looked up in llama.cpp's)."""
        if self.chat_template is None:
            return None
        from ..engine.llama.model import builtin_chat_templates
        from ..engine.templates import load_chat_template

        return load_chat_template(self.chat_template, builtin_chat_templates())

    def open(self, *, chat_context: bool = True) -> "Model":
        """``chat_context=False`` for batch and translate: they decode through the parallel
        decoder's own context, and the chat one would only take memory."""
        from ..engine.llama.placement import CACHE_TYPES
        from ..engine.model import Model  # loading llama.cpp is deferred to here
        from . import console as console_mod
        from .errors import UsageError

        if self.cache_type not in CACHE_TYPES:
            raise UsageError(f"--cache-type takes {', '.join(CACHE_TYPES)}, not {self.cache_type!r}")
        most = max_threads()
        if self.threads is not None and self.threads > most:
            raise UsageError(f"--threads {self.threads} is more than this machine can run: at most {most} "
                             f"({os.cpu_count() or 1} CPUs)")
        m = Model(self.path(), n_ctx=self.ctx, n_threads=self.threads, n_gpu_layers=self.gpu_layers,
                  verbose=self.verbose, chat_template=self.template(), chat_context=chat_context,
                  speculate=self.speculate, cache_type=self.cache_type)
        for note in m.notes:
            console_mod.current().error(f"note: {note}")
        for w in m.warnings:
            console_mod.current().error(f"warning: {w}")
        from ..engine import promptcache  # evaluated prompts kept across runs

        pc = promptcache.attach(m, warn=lambda line: console_mod.current().error(f"warning: {line}"))
        if pc is not None and self.verbose:
            pc.report = console_mod.current().error
        return m

    def open_for_decoder(self) -> "Model":
        return self.open(chat_context=False)

    def default_parallel(self) -> int:
        """Sequences decoded at once when --parallel is not given: more where a GPU does the work."""
        from ..engine.llama.runtime import supports_gpu_offload

        return 8 if supports_gpu_offload() and self.gpu_layers != 0 else 4

    def n_parallel(self) -> int:
        return self.parallel if self.parallel is not None else self.default_parallel()

    @property
    def label(self) -> str:
        """The model as the user named it (for saved conversations), else ""; a file as its
        absolute path, so that `chat --continue` finds it from any folder."""
        if self.model and self.model.lower().endswith(".gguf") and os.path.isfile(os.path.expanduser(self.model)):
            return os.path.abspath(os.path.expanduser(self.model))
        return self.model or ""


# The sampling options, declared once: SamplingArgs below and `models add` (where every one is
# optional: what is not given is not written) use them.
MaxTokens = Annotated[Optional[int], typer.Option(
    "--max-tokens", min=1, metavar="N", show_default="when the model ends its turn",
    help="Stop after this many tokens.")]
Temperature = Annotated[Optional[float], typer.Option(
    "--temperature", "-t", min=0.0, metavar="T", help="Sampling temperature; 0 = greedy and deterministic.")]
TopP = Annotated[Optional[float], typer.Option(
    "--top-p", min=0.0, max=1.0, metavar="P", help="Nucleus sampling threshold.")]
TopK = Annotated[Optional[int], typer.Option(
    "--top-k", min=0, metavar="K", help="Keep only the K most likely tokens; 0 = off.")]
RepeatPenalty = Annotated[Optional[float], typer.Option(
    "--repeat-penalty", min=0.0, metavar="X", help="Penalty for repeated tokens; 1 = off.")]
Seed = Annotated[Optional[int], typer.Option(
    "--seed", metavar="N", show_default="random", help="Random seed for reproducible sampling.")]


@dataclasses.dataclass(frozen=True)
class SamplingArgs(OptionGroup):
    """How tokens are chosen; built into the engine's ``SamplingParams`` (validated)."""

    PANEL: ClassVar[str] = "Sampling"

    max_tokens: MaxTokens = None
    temperature: Temperature = DEFAULT_TEMPERATURE
    top_p: TopP = DEFAULT_TOP_P
    top_k: TopK = 0
    repeat_penalty: RepeatPenalty = 1.0
    seed: Seed = None

    @classmethod
    def from_options(cls, **values: Any) -> SamplingParams:
        from .errors import UsageError

        try:
            return SamplingParams(**values)
        except ValueError as e:
            raise UsageError(str(e)) from e


@dataclasses.dataclass(frozen=True)
class SystemArgs(OptionGroup):
    """The system prompt: given inline or read from a file (read when asked for)."""

    PANEL: ClassVar[str] = "Prompt"

    system: SystemOpt = None
    system_file: Annotated[Optional[str], typer.Option(
        "--system-file", metavar="PATH", help="Read the system prompt from a file.")] = None

    def text(self) -> Optional[str]:
        from ..textio import read_text_file
        from .errors import UsageError

        if self.system is not None and self.system_file is not None:
            raise UsageError("use either --system or --system-file, not both")
        if self.system_file is not None:
            return read_text_file(self.system_file).strip("\n")
        return self.system


@dataclasses.dataclass(frozen=True)
class RayArgs(OptionGroup):
    """--ray: the same job on a Ray cluster (chatglm3_cli.scale; the optional `ray` extra)."""

    PANEL: ClassVar[str] = "Ray cluster (pip install '.\\[ray]')"  # "\\[": not rich markup

    ray: Annotated[Optional[str], typer.Option(
        "--ray", metavar="[ADDRESS]",  # a bare --ray means local: see app.optional_values
        help="Run on a Ray cluster: alone (or 'local') starts one on this machine for the job; "
             "'auto' joins RAY_ADDRESS or the cluster running here; or HOST:PORT, ray://HOST:10001.")] = None
    workers: Annotated[Optional[int], typer.Option(
        "--workers", min=1, max=4096, metavar="N", show_default="1",
        help="With --ray: workers (Ray actors), each with the model loaded once.")] = None
    worker_cpus: Annotated[Optional[float], typer.Option(
        "--worker-cpus", min=0.01, metavar="CPUS", show_default="1",
        help="With --ray: CPUs per worker, also its llama.cpp threads unless --threads.")] = None
    worker_gpus: Annotated[Optional[float], typer.Option(
        "--worker-gpus", min=0.0, metavar="GPUS", show_default="0",
        help="With --ray: GPUs per worker (0.5: two workers share one).")] = None

    def cluster(self, *, verbose: bool = False) -> "Optional[ClusterOptions]":
        """The cluster to run on, or None without --ray. Checked before any work: the worker
        options need --ray, and --ray needs Ray (imported only here)."""
        from .errors import UsageError

        if self.ray is None:
            given = [name for name, v in (("--workers", self.workers), ("--worker-cpus", self.worker_cpus),
                                          ("--worker-gpus", self.worker_gpus)) if v is not None]
            if given:
                raise UsageError(f"{', '.join(given)} only apply with --ray")
            return None
        from ..scale.cluster import ClusterOptions, import_ray

        import_ray(self.ray)  # not installed: say how to install it before reading anything
        return ClusterOptions(address=self.ray, workers=self.workers or 1, worker_cpus=self.worker_cpus or 1.0,
                              worker_gpus=self.worker_gpus or 0.0, verbose=verbose)

    @staticmethod
    def worker_model(model: ModelArgs, cluster: "ClusterOptions") -> tuple["ModelRef", "LoadOptions"]:
        """How each worker finds the model (the name as the driver resolved it, the driver's file
        and its sha256) and loads it (the model options; threads: the worker's CPUs)."""
        from ..hub.resolve import model_name
        from ..scale.batch import model_ref
        from ..scale.workers import LoadOptions

        ref = model_ref(model_name(model.model), model.path(), offline=model.offline or None,
                        endpoint=model.endpoint)
        load = LoadOptions(n_ctx=model.ctx, n_threads=model.threads or cluster.threads,
                           n_gpu_layers=model.gpu_layers, verbose=model.verbose, chat_template=model.template())
        return ref, load

