"""`chatglm3 pull` and `chatglm3 models [list|info|add|rm]`: getting models and seeing what is on disk.

Models come from three sources: the Hugging Face Hub (in the HF cache), ModelScope (in a cache of
its own, `ms://` names), and local files (named with `models add`, or used with `-m FILE.gguf`).

Results (paths, tables, metadata) go to stdout; progress and status lines go to stderr.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from . import console as console_mod
from . import options as opt
from .errors import UsageError, handle_errors
from .help import App
from .visible import visible

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from ..hub.http import Hub
    from ..hub.registry import ModelSpec
    from ..hub.store import CachedFile


def _spec(model: Optional[str], quant: Optional[str] = None) -> "ModelSpec":
    from ..hub.resolve import model_name, spec_of

    spec = spec_of(model_name(model))
    if quant:
        if spec.is_local or spec.filename:
            raise UsageError("--quant goes with a model name or repo, not with a file")
        spec = replace(spec, quant=quant)
    return spec


def short_name(f: "CachedFile", source: str = "hub") -> str:
    """The shortest -m value that selects this file: alias:QUANT, repo:QUANT or repo/file
    (ModelScope's with ms://, since aliases read from the Hub unless the user prefers it)."""
    from ..hub.registry import ALIASES, MS_PREFIX

    if source == "modelscope":
        return MS_PREFIX + (f"{f.repo_id}:{f.quant}" if f.quant else f.name)
    if f.quant:
        for alias, repo_id in ALIASES.items():
            if repo_id.lower() == f.repo_id.lower():
                return f"{alias}:{f.quant}"
        return f"{f.repo_id}:{f.quant}"
    return f.name


def _cached() -> list[tuple[str, "CachedFile"]]:
    """(source, file) for every model in the Hub's cache and ModelScope's."""
    from ..hub.store import all_models
    from ..paths import hf_cache_dir, modelscope_cache_dir

    return ([("hub", f) for f in all_models(hf_cache_dir())]
            + [("modelscope", f) for f in all_models(modelscope_cache_dir())])


@handle_errors
def pull(
    model: Annotated[Optional[str], typer.Argument(
        help="Alias (chatglm3-6b[:QUANT]), Hub repo (owner/repo[:QUANT]), owner/repo/file.gguf, or "
         "the same on ModelScope after ms://.",
        metavar="MODEL", show_default="the configured model, else chatglm3-6b")] = None,
    quant: Annotated[Optional[str], typer.Option(
        "--quant", "-q", metavar="QUANT", show_default="Q4_K_M",
        help="Quantization, e.g. Q4_K_M, Q8_0, in any case.")] = None,
    list_quants: Annotated[bool, typer.Option(
        "--list", help="Show the quants the repo offers, with sizes; download nothing.")] = False,
    offline: opt.Offline = False,
    endpoint: opt.Endpoint = None,
) -> None:
    """Download a model ahead of time (resumable, verified); prints its path.

    Examples: chatglm3 pull · chatglm3 pull chatglm3-6b:q8_0 · chatglm3 pull bartowski/glm-4-9b-chat-GGUF --list
    · chatglm3 pull ms://LLM-Research/glm-4-9b-chat-GGUF
    """
    from ..hub.http import offline as is_offline
    from ..hub.resolve import client, fetch
    from .progress import make_progress

    con = console_mod.current()
    spec = _spec(model, quant)
    if spec.is_local:
        raise UsageError(f"{spec.text} is a file; pull takes a model name or a repo")
    assert spec.repo_id is not None
    if list_quants:
        if is_offline(offline):
            raise UsageError("--list asks the Hub, but offline mode is on "
                             "(see `chatglm3 models` for what is on disk)")
        _print_quants(con, client(spec, endpoint, con.error), spec.repo_id)
        return
    got = fetch(spec, offline=offline, endpoint=endpoint, progress=make_progress(con), refresh=True)
    con.error(f"{'downloaded' if got.downloaded else 'up to date:'} {got.repo_id}/{got.filename}")
    con.write(f"{got.path}\n")


def _print_quants(con: console_mod.Console, hub: "Hub", repo_id: str) -> None:
    from ..hub import human_size
    from ..hub.registry import DEFAULT_QUANT, gguf_files, quant_of

    files = {f.path: f for f in hub.list_files(repo_id)}
    names = gguf_files(files)
    if not names:
        con.error(f"{repo_id} has no .gguf files")
        return
    rows = sorted(names, key=lambda n: files[n].size)
    con.write(_table(["QUANT", "SIZE", "FILE"],
                     [[(quant_of(n) or "-") + (" *" if quant_of(n) == DEFAULT_QUANT else ""),
                       human_size(files[n].size), n] for n in rows]))


def _table(header: list[str], rows: list[list[str]]) -> str:
    rows = [[visible(c) for c in r] for r in rows]  # names from the cache folder, shown, not obeyed
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    return "\n".join(lines) + "\n"


models_app = App(
    help="Models on disk: list them (the default, or `models list`), show one's metadata, name a "
         "local file (`models add`), remove one.",
    invoke_without_command=True, no_args_is_help=False)


@models_app.callback()
@handle_errors
def models_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per model, one per line.")] = False,
) -> None:
    """List the models: name (usable with -m), source, quant, size, last used, path."""
    if ctx.invoked_subcommand is None:
        _list_models(as_json)


@models_app.command("list")
@handle_errors
def models_list_command(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per model, one per line.")] = False,
) -> None:
    """List the models (the same as `chatglm3 models`)."""
    _list_models(as_json)


@dataclass(frozen=True)
class _Row:
    name: str
    source: str  # hub, modelscope, local (models add) or file (used with -m)
    quant: Optional[str]
    size: int
    path: "Path"
    repo: Optional[str] = None
    file: Optional[str] = None


def _rows() -> list[_Row]:
    """Every model: the two caches, the ones named with `models add`, the files used with -m."""
    from pathlib import Path

    from .. import config
    from ..hub.registry import quant_of
    from ..hub.store import used_files

    rows = [_Row(short_name(f, src), src, f.quant, f.size, f.path, f.repo_id, f.filename) for src, f in _cached()]
    for m in config.load().models.values():
        if m.path:
            p = Path(m.path).expanduser()
            size = p.stat().st_size if p.is_file() else 0
            rows.append(_Row(m.name, "local", quant_of(p.name), size, p))
    named = {r.path.absolute() for r in rows}
    rows += [_Row(str(p), "file", quant_of(p.name), p.stat().st_size, p)
             for p in used_files() if p.absolute() not in named]
    return rows


def _list_models(as_json: bool) -> None:
    from ..hub import human_size
    from ..hub.store import last_used, partials
    from ..paths import hf_cache_dir, modelscope_cache_dir
    from .common import report_config_problems

    con = console_mod.current()
    report_config_problems(con)
    found = _rows()
    if as_json:
        for r in found:
            con.write(json.dumps({"name": r.name, "source": r.source, "repo": r.repo, "file": r.file,
                                  "quant": r.quant, "size": r.size, "path": str(r.path),
                                  "last_used": last_used(r.path.absolute())}) + "\n")
    elif found:
        rows = []
        for r in found:
            used = last_used(r.path.absolute())
            rows.append([r.name, r.source, r.quant or "-", human_size(r.size) if r.size else "missing",
                         time.strftime("%Y-%m-%d %H:%M", time.localtime(used)) if used else "never",
                         str(r.path)])
        con.write(_table(["NAME", "SOURCE", "QUANT", "SIZE", "LAST USED", "PATH"], rows))
    else:
        con.error(f"no models on disk yet (in {hf_cache_dir()}); get one with: chatglm3 pull chatglm3-6b, "
                  "or name a GGUF you have: chatglm3 models add NAME FILE.gguf")
    left = partials(cache=hf_cache_dir()) + partials(cache=modelscope_cache_dir())
    if left:
        size = sum(p.stat().st_size for p in left)
        con.error(f"{len(left)} partial download(s), {human_size(size)}: `chatglm3 pull MODEL` resumes, "
                  "`chatglm3 models rm MODEL` removes")


def _on_disk(model: Optional[str]) -> tuple["ModelSpec", list["CachedFile"]]:
    """Files the name means on disk; a bare repo or alias (no quant) means all of its GGUFs."""
    from ..hub.registry import gguf_files
    from ..hub.resolve import cache_of
    from ..hub.store import find_cached, repo_files

    spec = _spec(model)
    if spec.is_local:
        assert spec.path is not None
        target = spec.path.resolve()
        return spec, [f for _, f in _cached() if target in (f.path.resolve(), f.path.absolute())]
    assert spec.repo_id is not None
    if spec.quant or spec.filename:
        hit = find_cached(spec, cache_of(spec))
        return spec, [hit] if hit else []
    return spec, [f for f in repo_files(spec.repo_id, cache_of(spec)) if gguf_files([f.filename])]


@models_app.command("info")
@handle_errors
def models_info(
    model: Annotated[str, typer.Argument(
        metavar="MODEL", help="A model name (as `chatglm3 models` shows it) or a .gguf path.")],
) -> None:
    """Show a model's GGUF metadata: architecture, context, layers, quant, size, sha256, and
    how its prompts are built (chat template) and where its answers stop (stop tokens)."""
    from ..engine.gguf_file import read_gguf
    from ..engine.model import chat_facts
    from ..errors import ModelNotFoundError
    from ..hub import human_size
    from ..hub.registry import quant_of

    con = console_mod.current()
    spec, files = _on_disk(model)
    if spec.is_local:
        assert spec.path is not None
        path, name, blob_sha = spec.path, spec.path.name, None
    elif files:
        f = _one(spec, files)
        path, name = f.path, short_name(f, spec.source)
        blob_sha = f.blob.name if len(f.blob.name) == 64 else None  # verified when downloaded
    else:
        raise ModelNotFoundError(f"{spec.text} is not on disk", hint=f"download it with: chatglm3 pull {spec.text}")
    info = read_gguf(path)
    facts = chat_facts(path, info)
    sha = blob_sha or _sha256(path, con)
    source = spec.source if not spec.is_local else ("local" if _registered(spec.text) else "file")
    rows = [
        ("name", name), ("source", source), ("path", str(path)), ("architecture", info.architecture or "-"),
        ("model", str(info.get("general.name") or "-")),
        ("context", str(info.context_length or "-")),
        ("layers", str(info.arch_get("block_count", "-"))),
        ("embedding", str(info.arch_get("embedding_length", "-"))),
        ("quant", info.quant or (f"{quant_of(path.name)} (from the file name)" if quant_of(path.name) else "-")),
        ("tensors", str(len(info.tensors))),
        ("size", f"{human_size(info.file_size)} ({info.file_size:,} bytes)"),
        ("sha256", sha), ("gguf", f"version {info.version}"),
        ("chat template", f"yes ({facts.template_chars:,} characters)" if facts.template_chars else "none"),
        ("prompts", facts.prompt_format),
        ("stop tokens", ", ".join(f"{text or '(empty)'} ({i})" for i, text in facts.stop_tokens) or "none"),
    ]
    con.write("".join(f"{k + ':':<15}{visible(v)}\n" for k, v in rows))  # the file's strings, shown


def _registered(name: str) -> bool:
    """A name from `models add` (a [models.NAME] table with a path)."""
    from .. import config

    settings = config.load().settings(name)
    return settings is not None and settings.path is not None


def _one(spec: "ModelSpec", files: list["CachedFile"]) -> "CachedFile":
    """A name without a quant means the default quant, or the repo's only file on disk."""
    from ..errors import ModelNotOnHubError
    from ..hub.resolve import cache_of
    from ..hub.store import find_cached

    if len(files) == 1:
        return files[0]
    hit = find_cached(spec, cache_of(spec))
    if hit is None:
        quants = ", ".join(sorted(short_name(f, spec.source) for f in files))
        raise ModelNotOnHubError(f"{spec.text} has several files on disk: {quants}",
                                 hint="name one of them")
    return hit


def _sha256(path: "Path", con: console_mod.Console) -> str:
    from ..files import file_sha256

    if path.stat().st_size > 500_000_000:
        con.error(f"computing the sha256 of {path.name} (cached for next time) ...")
    return file_sha256(path)


@models_app.command("rm")
@handle_errors
def models_rm(
    model: Annotated[str, typer.Argument(
        metavar="MODEL", help="A model name (alias[:QUANT], owner/repo[:QUANT]) or its path; "
             "without a quant, all of the repo's files.")],
) -> None:
    """Remove a model from disk, with the repo's partial downloads."""
    from ..errors import ModelNotFoundError
    from ..hub import human_size
    from ..hub.store import PARTIAL_SUFFIX, download_locks, partials, remove

    con = console_mod.current()
    spec, files = _on_disk(model)
    if spec.is_local and not files and _registered(spec.text):
        from .. import config

        if not config.remove_model(spec.text):
            raise UsageError(f"{spec.text} is written in {config.config_file()} in a form this command "
                             "does not edit; remove its table there")
        con.error(f"removed the name {spec.text} from {config.config_file()}; the file {spec.path} is left as it is")
        return
    if spec.is_local and not files:
        raise UsageError(f"{spec.text} is not in the model cache; delete the file yourself")
    from ..hub.resolve import cache_of

    cache = cache_of(spec)
    repo = spec.repo_id or (files[0].repo_id if files else None)
    left = partials(repo, cache) if repo else []
    if not files and not left:
        raise ModelNotFoundError(f"{spec.text} is not on disk", hint="see what is with: chatglm3 models")
    left_size = sum(p.stat().st_size for p in left)
    blobs = [(f.repo_id, f.blob.name) for f in files]
    if repo:
        blobs += [(repo, p.name.removesuffix(PARTIAL_SUFFIX)) for p in left]
    with download_locks(blobs, cache):  # a running pull keeps its partial file: refused, nothing removed
        for f in files:
            con.error(f"removing {short_name(f, spec.source)} ({human_size(f.size)}) {f.path}")
        remove(files, partials_of=repo, cache=cache)
    if left:
        con.error(f"removed {len(left)} partial download(s) of {repo} ({human_size(left_size)})")


@models_app.command("add")
@handle_errors
def models_add(
    name: Annotated[str, typer.Argument(
        metavar="NAME", help="The name to use with -m (letters, digits, '.', '_', '-').")],
    file: Annotated[str, typer.Argument(metavar="FILE.gguf", help="A GGUF file on this machine.")],
    chat_template: opt.ChatTemplateOpt = None,
    system: opt.SystemOpt = None,
    temperature: opt.Temperature = None,
    top_p: opt.TopP = None,
    top_k: opt.TopK = None,
    repeat_penalty: opt.RepeatPenalty = None,
    max_tokens: opt.MaxTokens = None,
    seed: opt.Seed = None,
) -> None:
    """Name a local GGUF file, with its own settings (like `ollama create`): then `-m NAME` runs
    it with them, and `chatglm3 models` lists it. Written to the config file as \\[models.NAME].

    Example: chatglm3 models add gemma ~/gemma-2b.gguf --chat-template gemma -s "Answer briefly." -t 0.3
    """
    import os

    from .. import config
    from ..errors import ModelNotFoundError
    from ..hub.registry import ALIASES

    path = os.path.abspath(os.path.expanduser(file))
    if not os.path.isfile(path):
        raise ModelNotFoundError(f"model file not found: {file[:200]}")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise UsageError(f"{file[:200]} is not a GGUF file")
    if name.lower() in ALIASES:
        raise UsageError(f"{name} is a built-in alias; pick another name")
    template = chat_template
    if template is not None and os.path.isfile(os.path.expanduser(template)):
        template = os.path.abspath(os.path.expanduser(template))  # found from any folder later
    sampling = {k: v for k, v in {"temperature": temperature, "top_p": top_p, "top_k": top_k,
                                  "repeat_penalty": repeat_penalty, "max_tokens": max_tokens,
                                  "seed": seed}.items() if v is not None}
    where = config.add_model(config.ModelSettings(name, path=path, chat_template=template, system=system,
                                                  sampling=sampling))
    console_mod.current().error(f"added {name} -> {path} (in {where}); run it with: chatglm3 chat -m {name}")
