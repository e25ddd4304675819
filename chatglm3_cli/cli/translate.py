"""`chatglm3 translate PATH... --to LANG`: whole files translated, structure kept.

This module parses arguments, expands directories, shows progress and the summary; the work
is ``chatglm3_cli.translate.pipeline.translate``. Translations go to files (or stdout for
stdin and --preview); progress, problems and the summary go to stderr.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from . import console as console_mod
from .errors import UsageError, handle_errors
from .exit_codes import ExitCode
from .options import ModelArgs, RayArgs, SamplingArgs, SamplingParams, SequenceCtx, parallel_option, with_options
from .progress import plural

if TYPE_CHECKING:  # pragma: no cover
    from ..translate.languages import Language
    from ..translate.pipeline import FileTask, Summary

# --max-tokens means a cap per chunk's answer here; a longer answer is retried in smaller chunks.
AnswerCap = Annotated[Optional[int], typer.Option(
    "--max-tokens", min=1, metavar="N", show_default="3x the chunk's tokens + 32",
    help="Stop each answer after this many tokens (a longer one is retried smaller).")]
MAX_LISTED = 50  # failed units listed one by one in the summary


def _summary_lines(s: "Summary") -> list[str]:
    n = len(s.files)
    failed_files = s.failed_files
    head = f"{n} file{'s' if n != 1 else ''}"
    if failed_files:
        head += f" ({len(failed_files)} failed)"
    chunks = plural(s.chunks, "chunk")
    parts = [head, f"{s.chunks_done} of {chunks} done" if s.interrupted else chunks]
    if s.cached:
        parts.append(f"{plural(s.cached, 'answer')} from the checkpoint")
    parts += [plural(s.requests, "request"), plural(s.retries, "retry").replace("retrys", "retries"),
             f"{plural(s.failed_units, 'unit')} not translated"]
    if s.generated_tokens and s.seconds > 0:
        parts.append(f"{s.generated_tokens} tokens in {s.seconds:.1f}s, {s.tokens_per_second:.1f} tok/s")
    lines = ["translate: " + " · ".join(parts)]
    listed = 0
    for r in s.files:
        for fail in sorted(r.failures, key=lambda x: x.line):
            if listed < MAX_LISTED:
                kept = "" if r.status == "failed" else " (kept as is)"
                where = f"{fail.where}:" if fail.where else ""  # an EPUB's chapter
                lines.append(f"  not translated{kept}: {r.task.label}:{where}{fail.line}: {fail.reason}: "
                             f"{fail.excerpt}")
            listed += 1
    if listed > MAX_LISTED:
        lines.append(f"  ... and {listed - MAX_LISTED} more units not translated")
    for r in failed_files:
        err = r.error or "failed"
        lines.append(f"  failed: {err if err.startswith(r.task.label) else r.task.label + ': ' + err}")
    if s.unused_terms:
        terms = ", ".join(f"{src} → {dst} ({k}×)" for (src, dst), k in s.unused_terms.most_common(20))
        lines.append(f"translate: glossary terms not used where they occurred: {terms}")
    return lines


def _skip_in_walk(p: Path, codes: set[str]) -> bool:
    """Inside a directory, leave out hidden files and our own outputs (name.LANG.ext)."""
    if any(part.startswith(".") for part in p.parts):
        return True
    stem_ext = p.stem.rsplit(".", 1)
    return len(stem_ext) == 2 and stem_ext[1].lower() in codes


def _expand(paths: list[str], glob: Optional[str], fmt: Optional[str], target_code: str,
            outdir: Optional[Path]) -> list["FileTask"]:
    from ..translate.formats import EXTENSIONS, IN_DIRECTORIES
    from ..translate.languages import CODES
    from ..translate.pipeline import FileTask

    codes = set(CODES) | {target_code}
    walked_ext = [e for e, f in EXTENSIONS.items() if f in IN_DIRECTORIES]
    tasks: list[FileTask] = []
    seen: dict[Path, str] = {}
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            found = sorted(q for q in p.glob(glob or "**/*") if q.is_file()
                           and not _skip_in_walk(q.relative_to(p), codes)
                           and (glob is not None or fmt is not None
                                or EXTENSIONS.get(q.suffix.lower()) in IN_DIRECTORIES))
            if not found:
                raise UsageError(f"{arg}: no files to translate (looked for "
                                 f"{glob or 'files ending ' + ', '.join(walked_ext)})")
            pairs = [(q, q.relative_to(p)) for q in found]
        else:
            pairs = [(p, Path(p.name))]
        for src, rel in pairs:
            if outdir is not None:
                out = outdir / rel
            else:
                out = src.with_name(f"{src.stem}.{target_code}{src.suffix}")
            key = out.resolve()
            if key in seen:
                raise UsageError(f"{src} and {seen[key]} would both be written to {out}",
                                 hint="translate them in separate runs or with different -o")
            seen[key] = str(src)
            tasks.append(FileTask(str(src), path=src, output=out, fmt=fmt))
    return tasks


@handle_errors
@with_options
def translate(
    paths: Annotated[list[str], typer.Argument(
        help="Files or directories to translate ('-' for stdin to stdout).", metavar="PATH...",
        show_default=False)],
    to: Annotated[str, typer.Option(
        "--to", help="Target language: a code (zh, en, ja, ko, fr, de, es, ru, ...) or a name.",
        metavar="LANG", show_default=False)],
    from_: Annotated[str, typer.Option(
        "--from", help="Source language, or 'auto' to let the model tell.", metavar="LANG")] = "auto",
    output_dir: Annotated[Optional[str], typer.Option(
        "--output-dir", "-o", metavar="DIR", show_default="beside each input as NAME.LANG.EXT",
        help="Write the translations here, keeping names (and the tree of a directory).")] = None,
    glob: Annotated[Optional[str], typer.Option(
        "--glob", metavar="PATTERN",
        show_default="every text, Markdown, subtitle, HTML, EPUB and gettext file; JSON/YAML only by name",
        help="Which files of a directory to translate, e.g. '**/*.md'.")] = None,
    fmt: Annotated[Optional[str], typer.Option(
        "--format", metavar="FORMAT", show_default="from the extension; txt for stdin",
        help="Treat the input as txt, md, srt, vtt, html, epub, po, json or yaml (stdin, or files of another "
             "extension).")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing output that translate did not write (a translation "
                            "made or edited by hand); without it, such a file is kept and reported.")] = False,
    bilingual: Annotated[bool, typer.Option(
        "--bilingual", help="Keep the original and put the translation after each paragraph, cue or cell "
                            "(txt, md, srt, vtt, html, epub).")] = False,
    retranslate: Annotated[bool, typer.Option(
        "--retranslate", help="gettext: translate the entries that already have a msgstr too (by default "
                              "they are left alone).")] = False,
    glossary: Annotated[Optional[str], typer.Option(
        "--glossary", metavar="FILE",
        help="Term pairs to translate consistently: TSV (term<TAB>translation) or JSON.")] = None,
    prompt_file: Annotated[Optional[str], typer.Option(
        "--prompt-file", metavar="FILE",
        help="Your own instructions instead of ours; {to}, {from}, {glossary} and {format_rules} "
             "are filled in.")] = None,
    preview: Annotated[Optional[int], typer.Option(
        "--preview", min=1, metavar="N",
        help="Translate only the first N chunks of each file and print them to stdout.")] = None,
    model: ModelArgs = ModelArgs.options(ctx=SequenceCtx, parallel=parallel_option("Chunks")),
    sampling: SamplingParams = SamplingArgs.options(temperature=0.0, max_tokens=AnswerCap),
    ray: RayArgs = RayArgs.options(),
) -> None:
    """Translate text, Markdown, subtitles, HTML, EPUB books, gettext catalogues and JSON/YAML
    locale files, keeping their structure.

    Only the text is translated; everything else is copied byte-for-byte: txt (paragraphs;
    layout kept), md (headings, paragraphs, items, cells, link texts; front matter, code, URLs,
    HTML and table layout kept), srt/vtt (cue text; numbers, timings, settings, notes kept), html
    (text of blocks, title, alt and title attributes; tags, attributes, scripts, styles, pre and
    code kept), epub (each spine document as html, the navigation labels and the book's title;
    CSS, images and the package kept), po/pot (msgstr of untranslated entries, plural forms of
    the target; msgid, context, comments, flags kept; a failed entry is marked fuzzy), json/arb
    and yaml/yml (string values; keys, order, comments, ICU and {{name}}/%{name} placeholders
    kept). An answer that is not a translation of its unit is retried smaller, then listed, never
    written. Re-running the same command resumes where it stopped.

    Examples: chatglm3 translate README.md --to zh · chatglm3 translate subs/ --to en --glob
    '*.srt' · cat notes.txt | chatglm3 translate - --to ja
    """
    from ..textio import read_text_file
    from ..translate.glossary import Glossary, load_glossary
    from ..translate.pipeline import Settings
    from ..translate.pipeline import translate as run_translate

    con = console_mod.current()
    cluster = ray.cluster(verbose=model.verbose)
    target, source = parse_languages(con, to, from_)
    fmt = normalize_format(fmt)
    if "-" in paths:
        tasks = stdin_task(con, paths, output_dir, fmt)
    else:
        tasks = _expand(paths, glob, fmt, target.code, Path(output_dir) if output_dir else None)

    gloss = load_glossary(glossary) if glossary else Glossary()
    template = read_text_file(prompt_file) if prompt_file else None
    # --max-tokens caps each chunk's answer (the pipeline sets each request's own cap)
    settings = Settings(target=target, source=source, params=replace(sampling, max_tokens=None),
                        n_parallel=model.n_parallel() if cluster is None else cluster.n_parallel(model.parallel),
                        n_ctx=model.ctx, bilingual=bilingual,
                        glossary=gloss, prompt_template=template, preview=preview,
                        max_answer_tokens=sampling.max_tokens, overwrite=overwrite, retranslate=retranslate)
    from .translate_progress import make_translate_progress

    progress = make_translate_progress(con)
    # model.open resolves the model only once some input is known to be usable: a wrong file
    # never costs a model download
    open_model: Any = model.open_for_decoder
    make_decoder = None
    if cluster is not None:  # the same pipeline; its decoder is the cluster's workers
        from ..scale.translate import make_decoder_factory

        def open_model() -> Any:  # the driver only tokenizes and plans: no GPU for it
            from ..engine.model import Model

            return Model(model.path(), n_ctx=model.ctx, n_threads=model.threads, n_gpu_layers=0,
                         verbose=model.verbose, chat_template=model.template(), chat_context=False)

        make_decoder = make_decoder_factory(cluster, lambda: RayArgs.worker_model(model, cluster),
                                            on_note=lambda text: con.error(f"translate: ray: {text}"))
    summary = run_translate(tasks, open_model=open_model, settings=settings, progress=progress,
                            make_decoder=make_decoder)
    write_stdout_results(con, summary, preview)
    for line in _summary_lines(summary):
        con.error(line)
    if summary.interrupted:
        if all(r.resumable for r in summary.files):
            con.error("translate: interrupted; finished chunks are kept: run the same command again to resume")
        else:
            con.error("translate: interrupted; resume is off where the checkpoint could not be written (see the "
                      "warning): the same command translates those files again from the start")
        raise typer.Exit(ExitCode.INTERRUPTED)
    if not summary.ok:
        raise failure(summary, sampling)


def parse_languages(con: console_mod.Console, to: str, from_: str) -> tuple[Language, Optional[Language]]:
    """--to and --from ('auto': None); a name the tool does not know is warned about."""
    from ..translate.languages import parse_language

    try:
        target = parse_language(to)
        source = None if from_.strip().lower() in ("auto", "") else parse_language(from_)
    except ValueError as e:
        raise UsageError(str(e)) from None
    for lang, flag in ((target, "--to"), (source, "--from")):
        if lang is not None and not lang.known:
            con.error(f"warning: {flag} {lang.name!r} is not a language this tool knows: the model is "
                      f"asked for {lang.name!r} as written" + (f", and outputs are named NAME.{lang.code}.EXT"
                                                               if flag == "--to" else ""))
    return target, source


def normalize_format(fmt: Optional[str]) -> Optional[str]:
    """--format by its name or an alias (markdown, text, webvtt); None: from each extension."""
    from ..translate.formats import FORMATS

    if fmt is None:
        return None
    fmt = {"markdown": "md", "text": "txt", "webvtt": "vtt", "htm": "html", "xhtml": "html", "pot": "po",
           "gettext": "po", "arb": "json", "yml": "yaml"}.get(fmt.lower(), fmt.lower())
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return fmt


def stdin_task(con: console_mod.Console, paths: list[str], output_dir: Optional[str],
               fmt: Optional[str]) -> list[FileTask]:
    """'-': stdin in, stdout out; its checkpoint is keyed by the text itself."""
    import hashlib

    from ..translate.pipeline import FileTask

    if len(paths) > 1:
        raise UsageError("'-' (stdin) cannot be mixed with files")
    if output_dir is not None:
        raise UsageError("with '-' the translation goes to stdout; -o is for files")
    if con.stdin_isatty:
        raise UsageError("PATH is '-' (stdin), but stdin is a terminal: pipe the text in")
    if fmt == "epub":
        raise UsageError("an EPUB book is translated from a file, not from stdin", hint="pass the .epub path")
    data = con.read_stdin_bytes()
    return [FileTask("stdin", data=data, fmt=fmt or "txt", checkpoint="stdin:" + hashlib.sha256(data).hexdigest())]


def write_stdout_results(con: console_mod.Console, summary: Summary, preview: Optional[int]) -> None:
    """Translations that go to stdout (stdin, --preview); a preview of several files is headed."""
    for r in summary.files:
        if r.text is not None:
            if preview is not None and len(summary.files) > 1:
                con.write(f"==> {r.task.label} <==\n")
            con.write(r.text + ("\n" if preview is not None and not r.text.endswith("\n") else ""))


def failure(summary: Summary, sampling: SamplingParams) -> Exception:
    """The error a run that left something untranslated exits with: INPUT_ERROR when each file
    that failed could not be read (missing, binary, not its format): a rerun cannot help, so no
    hint says to retry; TRANSLATE_FAILED otherwise."""
    from ..errors import InputError, TranslationFailedError
    from ..translate.pipeline import retry_advice

    nf = len(summary.failed_files)
    nu = sum(len(r.failures) for r in summary.files if r.status != "failed")
    if nf and not nu and all(r.input_error for r in summary.failed_files):
        n = len(summary.files)
        return InputError(f"{nf} of {n} file{'s' if n != 1 else ''} could not be read (listed above)",
                          hint="fix or leave out those files")
    what = []
    if nf:
        what.append(f"{nf} of {len(summary.files)} file{'s' if len(summary.files) != 1 else ''} failed")
    if nu:
        what.append(f"{nu} unit{'s' if nu != 1 else ''} not translated (kept in the source language)")
    model_ran = summary.failed_units or any(r.wordy for r in summary.failed_files)
    hint = retry_advice(summary, sampling) if model_ran else None
    return TranslationFailedError("; ".join(what) or "the translation is incomplete", hint=hint)
