"""Evaluated prompt prefixes kept on disk, so that a later process does not evaluate them again.

On a CPU, evaluating a prompt is the wait users feel (a 6B Q4_0 file: ~12 tokens/s on 2 cores).
Inside one process the KV cache already keeps what it evaluated (generate.KVCache, the decoder's
PrefixStore); this module keeps it across processes: after an answer the KV cells of the
sequence are saved with llama.cpp's per-sequence state API (llama_state_seq_get_data), and a
later prompt that starts with the same tokens gets the longest saved prefix back
(llama_state_seq_set_data), cut to the same aligned length the in-process reuse takes
(prefixes.usable_prefix), so the rest of the prompt is cut into decode calls exactly as when
the prompt is evaluated alone and the logits are the same to the bit.

An entry is one file ``<model>-<settings>-<tokens>.kv`` under ``cache_dir()/prompts``:

    MAGIC | header length (u32 LE) | header (JSON) | sha256(header) | payload (llama.cpp's state)

The header holds the key (what changes the cells: the model file's identity, llama.cpp's
version and state format, the KV cache type, flash attention, the prompt batch size, GPU
layers), the token ids the cells hold, the payload's size and sha256, and the conversation it
came from (so that deleting a conversation deletes its entries). An entry that is truncated,
corrupted, of another format or llama.cpp version, or claims another model, is never loaded:
it is removed with one warning line.

Safety: files are written to a temp file and renamed (atomic), mode 0600 in a 0700 folder;
writers take a file lock (two processes at once), readers need none (a rename is atomic); the
folder is bounded (CHATGLM3_PROMPT_CACHE_SIZE, least recently used out: a hit touches the
file's mtime); a failed write (a full disk) is a warning, never an error;
CHATGLM3_PROMPT_CACHE=0 turns it all off.

Engine hooks (kept to a line each so they survive rewrites of those files):
``KVCache.prepare`` calls ``restore_single``, ``Generation`` calls ``save_single`` after an
answer, and the parallel decoder calls ``decoder_restore`` / ``decoder_kept``.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from .. import env
from ..files import atomic_write_bytes
from .llama.context import align_down
from .llama.runtime import llama_version
from .prefixes import common_prefix, usable_prefix

if TYPE_CHECKING:  # pragma: no cover
    from .decoder import ParallelDecoder
    from .generate import KVCache
    from .llama.context import LlamaContext
    from .model import Model

FORMAT = 1
MAGIC = b"CHATGLM3-KV\n"
SUFFIX = ".kv"
TEMP_PATTERN = ".*.tmp"  # files.atomic_write_bytes' temp files, left by a killed writer
DEFAULT_MAX_BYTES = 4 << 30  # 4 GiB: ~150,000 tokens of ChatGLM3-6B's f16 KV cache (28 KiB each)
# Fewer tokens than this are evaluated faster than a file is found, read and checked.
MIN_TOKENS = 64
_HEADER_MAX = 64 << 20  # a header is JSON with the token ids: refuse anything absurd
_MODEL_HASH_BYTES = 4 << 20  # the GGUF header and metadata (vocabulary included) lie in front


def enabled() -> bool:
    """CHATGLM3_PROMPT_CACHE=0 (or off/no/false) turns the cache off; on by default."""
    return env.switch("CHATGLM3_PROMPT_CACHE") is not False


def max_bytes() -> int:
    """CHATGLM3_PROMPT_CACHE_SIZE, else DEFAULT_MAX_BYTES (an unreadable value: the default)."""
    size = env.size("CHATGLM3_PROMPT_CACHE_SIZE")
    return DEFAULT_MAX_BYTES if size is None else size


def cache_root() -> Path:
    from ..paths import cache_dir

    return cache_dir() / "prompts"


def _default_warn(line: str) -> None:
    sys.stderr.write(f"warning: {line}\n")


def model_identity(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The model file's identity: size, mtime and a hash of its first 4 MiB (header, metadata
    and vocabulary), not just its path: a file replaced at the same path is another model."""
    p = Path(path)
    st = p.stat()
    h = hashlib.sha256()
    with open(p, "rb") as f:
        h.update(f.read(_MODEL_HASH_BYTES))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "head_sha256": h.hexdigest()}


def _digest(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:n]


def _tokens_digest(tokens: Sequence[int]) -> str:
    return hashlib.sha256(struct.pack(f"<{len(tokens)}i", *tokens)).hexdigest()[:16]


@dataclass
class Entry:
    """A valid entry's header (its payload is checked only when it is loaded)."""

    path: Path
    header: dict[str, Any]
    offset: int  # where the payload starts

    @property
    def tokens(self) -> list[int]:
        return list(self.header["tokens"])

    @property
    def size(self) -> int:
        return self.offset + int(self.header["payload_bytes"])


class BadEntry(Exception):
    """Why an entry cannot be used (it is then removed)."""


def read_header(path: Path) -> Entry:
    """An entry's header, checked (magic, length, checksum, file size); BadEntry otherwise."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC) + 4)
            if len(head) < len(MAGIC) + 4 or not head.startswith(MAGIC):
                raise BadEntry("not a prompt cache entry")
            (n,) = struct.unpack("<I", head[len(MAGIC):])
            if n > _HEADER_MAX:
                raise BadEntry("header too large")
            raw = f.read(n)
            digest = f.read(32)
            size = os.fstat(f.fileno()).st_size
    except OSError as e:
        raise BadEntry(f"unreadable ({e.strerror or e})") from None
    if len(raw) < n or len(digest) < 32:
        raise BadEntry("truncated")
    if hashlib.sha256(raw).digest() != digest:
        raise BadEntry("checksum mismatch in its header")
    try:
        header = json.loads(raw)
        offset = len(MAGIC) + 4 + n + 32
        if (not isinstance(header, dict) or not isinstance(header.get("tokens"), list)
                or not all(type(t) is int for t in header["tokens"])):
            raise ValueError
        if size != offset + int(header["payload_bytes"]):
            raise BadEntry("truncated" if size < offset + int(header["payload_bytes"]) else "trailing bytes")
    except (ValueError, KeyError, TypeError):
        raise BadEntry("malformed header") from None
    return Entry(path, header, offset)


def read_payload(entry: Entry) -> bytearray:
    """The entry's state bytes, checked against the header's sha256; BadEntry otherwise. Read
    into one buffer that llama.cpp then reads in place (an entry can be hundreds of MB)."""
    n = int(entry.header["payload_bytes"])
    data = bytearray(n)
    try:
        with open(entry.path, "rb") as f:
            f.seek(entry.offset)
            got = f.readinto(data)
    except OSError as e:
        raise BadEntry(f"unreadable ({e.strerror or e})") from None
    if got != n:
        raise BadEntry("truncated")
    if hashlib.sha256(data).hexdigest() != entry.header.get("payload_sha256"):
        raise BadEntry("checksum mismatch")
    return data


def _entries(root: Path, pattern: str = "*" + SUFFIX) -> list[Path]:
    try:
        return sorted(root.glob(pattern)) if root.is_dir() else []
    except OSError:
        return []


@dataclass
class EntryInfo:
    """What `chatglm3 cache list` shows of an entry."""

    path: Path
    bytes: int
    tokens: int
    last_used: float
    conversation: str | None
    model: str
    error: str | None = None


def list_entries(root: Path | None = None) -> list[EntryInfo]:
    """Every entry file, most recently used first (a damaged one with its ``error``)."""
    root = root or cache_root()
    out = []
    for p in _entries(root):
        try:
            st = p.stat()
        except OSError:
            continue
        try:
            e = read_header(p)
            out.append(EntryInfo(p, st.st_size, len(e.header["tokens"]), st.st_mtime,
                                 e.header.get("conversation"), str(e.header.get("model_name", ""))))
        except BadEntry as err:
            out.append(EntryInfo(p, st.st_size, 0, st.st_mtime, None, "", error=str(err)))
    return sorted(out, key=lambda i: i.last_used, reverse=True)


def _lock(root: Path) -> Any:
    from filelock import FileLock

    return FileLock(str(root / ".lock"), timeout=60)


def clear(root: Path | None = None, *, conversation: str | None = None) -> tuple[int, int]:
    """Remove every entry (or only a conversation's): (files, bytes) removed."""
    root = root or cache_root()
    if not root.is_dir():
        return 0, 0
    files = size = 0
    with _lock(root):
        for p in _entries(root):
            if conversation is not None:
                try:
                    if read_header(p).header.get("conversation") != conversation:
                        continue
                except BadEntry:
                    continue
            try:
                n = p.stat().st_size
                p.unlink()
            except OSError:
                continue
            files, size = files + 1, size + n
        for tmp in _entries(root, TEMP_PATTERN):
            if conversation is None:
                _unlink(tmp)
    return files, size


def forget_conversation(conv_id: str, root: Path | None = None) -> int:
    """Remove the entries saved from a conversation (when it is deleted); how many."""
    try:
        return clear(root, conversation=conv_id)[0]
    except Exception:  # a lock timeout or an unwritable folder must not stop a deletion
        return 0


def _unlink(p: Path) -> None:
    try:
        p.unlink()
    except OSError:
        pass


class PromptCache:
    """The on-disk prefixes of one model file (entries of other files are left alone)."""

    def __init__(self, model_path: str | os.PathLike[str], *, root: Path | None = None,
                 limit: int | None = None, warn: Callable[[str], None] | None = None,
                 model_name: str = "") -> None:
        self.root = root or cache_root()
        self.limit = max_bytes() if limit is None else limit
        self._warn = warn or _default_warn
        self._warned: set[str] = set()
        self.model = model_identity(model_path)
        self.model_name = model_name or Path(model_path).name
        self.model_hash = _digest(self.model)
        self.conversation: str | None = None  # set by chat: entries saved now belong to it
        self.restored = 0  # tokens the last restore gave
        self.restored_total = 0
        self.restore_ms = 0.0  # how long the last restore took (read, check, load)
        # Headers already read, by file (inode and size: a replaced file is read again).
        self._seen: dict[Path, tuple[tuple[int, int], Entry]] = {}
        self.saved = 0  # entries written by this process
        self.report: Callable[[str], None] | None = None  # --verbose: what was restored and saved

    # keys ---------------------------------------------------------------------------------

    def key(self, ctx: "LlamaContext") -> dict[str, Any]:
        """Everything that changes the cells or their layout besides the tokens."""
        return {"format": FORMAT, "llama_cpp": llama_version(), "model": self.model,
                "cache_type": getattr(ctx, "cache_type", "f16"), "flash_attn": bool(getattr(ctx, "flash_attn", False)),
                "n_batch": int(ctx.n_batch), "gpu_layers": int(getattr(ctx.model, "n_gpu_layers", 0)),
                "cpu_extra_bufts": env.flag("CHATGLM3_CPU_EXTRA_BUFTS")}

    def _warn_once(self, line: str) -> None:
        if line not in self._warned:
            self._warned.add(line)
            self._warn(line)

    def _drop(self, path: Path, why: str) -> None:
        """One warning line, and the entry goes."""
        self._warn_once(f"prompt cache: ignored and removed {path.name}: {why}")
        self._seen.pop(path, None)
        try:
            with _lock(self.root):
                _unlink(path)
        except Exception:
            _unlink(path)

    # lookup -------------------------------------------------------------------------------

    def candidates(self, key: dict[str, Any]) -> Iterator[Entry]:
        """This model's valid entries with this key; bad and foreign ones are removed."""
        settings = _digest(key)
        for p in _entries(self.root, f"{self.model_hash}-*{SUFFIX}"):
            try:
                st = p.stat()
                seen = self._seen.get(p)
                if seen is not None and seen[0] == (st.st_ino, st.st_size):
                    e = seen[1]
                else:
                    e = read_header(p)
                    self._seen[p] = ((st.st_ino, st.st_size), e)
            except FileNotFoundError:  # removed by another process meanwhile
                continue
            except BadEntry as err:
                if p.exists():
                    self._drop(p, str(err))
                continue
            k = e.header.get("key") or {}
            if e.header.get("format") != FORMAT or k.get("format") != FORMAT or k.get("llama_cpp") != key["llama_cpp"]:
                self._drop(p, f"written by another version (llama-cpp-python {k.get('llama_cpp')}, "
                              f"format {e.header.get('format')})")
                continue
            if k.get("model") != self.model:
                self._drop(p, "written for another model file")
                continue
            if _digest(k) != settings:  # other settings (cache type, batch size): not for us
                continue
            yield e

    def best(self, ctx: "LlamaContext", prompt: Sequence[int], limit: int,
             max_cells: int) -> tuple[Entry | None, int]:
        """The entry that gives ``prompt`` the most tokens (aligned, at most ``limit``) among
        those of at most ``max_cells`` cells (an entry is loaded whole, then cut)."""
        best, n = None, 0
        for e in self.candidates(self.key(ctx)):
            if len(e.header["tokens"]) > max_cells:
                continue
            m = usable_prefix(e.header["tokens"], prompt, limit)
            if m > n:
                best, n = e, m
        return best, n

    def load_into(self, ctx: "LlamaContext", seq: int, entry: Entry, keep: int) -> bool:
        """Put an entry's cells in sequence ``seq`` and keep the first ``keep`` of them."""
        t0 = time.perf_counter()
        try:
            data = read_payload(entry)
        except BadEntry as err:
            if entry.path.exists():  # else another process evicted it meanwhile: nothing to say
                self._drop(entry.path, str(err))
            return False
        if not ctx.set_seq_state(seq, data):
            # Checked bytes of this very llama.cpp and key: the context had no room for them
            # (other sequences' cells), not a bad entry. It stays.
            ctx.remove(seq, 0, -1)
            return False
        held = len(entry.header["tokens"])
        if ctx.seq_pos_max(seq) != held - 1:
            # cells for another number of tokens than the header lists: never used
            ctx.remove(seq, 0, -1)
            self._drop(entry.path, "its cells do not match its tokens")
            return False
        if keep < held:
            ctx.remove(seq, keep, -1)
        try:
            os.utime(entry.path)  # last used: the least recently used go first
        except OSError:
            pass
        self.restored = keep
        self.restored_total += keep
        self.restore_ms = (time.perf_counter() - t0) * 1000
        if self.report is not None:
            self.report(f"prompt cache: {keep} tokens restored from disk ({_mib(len(data))} MiB)")
        return True

    # saving -------------------------------------------------------------------------------

    def save(self, ctx: "LlamaContext", seq: int, tokens: Sequence[int]) -> Path | None:
        """Save the cells sequence ``seq`` holds (for ``tokens``, in order). None when not
        worth it, already held, too big for the cache, or the write failed (a warning)."""
        if len(tokens) < MIN_TOKENS or self.limit <= 0:
            return None
        key = self.key(ctx)
        settings = _digest(key)
        aligned = align_down(len(tokens))
        superseded = []
        for e in self.candidates(key):
            shared = common_prefix(e.header["tokens"], tokens)
            if shared >= aligned:  # an entry already gives every prompt at least as much
                try:
                    os.utime(e.path)
                except OSError:
                    pass
                return None
            held = len(e.header["tokens"])
            if shared >= align_down(held):  # an earlier turn of this conversation
                superseded.append(e.path)
        payload = ctx.seq_state(seq)  # written and hashed in place
        if payload is None:
            return None
        n = len(payload)
        header = {"format": FORMAT, "key": key, "tokens": list(tokens), "payload_bytes": n,
                  "payload_sha256": hashlib.sha256(payload).hexdigest(), "created": time.time(),
                  "conversation": self.conversation, "model_name": self.model_name}
        raw = json.dumps(header, separators=(",", ":")).encode()
        total = len(MAGIC) + 4 + len(raw) + 32 + n
        if total > self.limit:
            return None
        name = f"{self.model_hash}-{settings}-{_tokens_digest(tokens)}{SUFFIX}"
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            with _lock(self.root):
                path = self.root / name
                entry = [MAGIC, struct.pack("<I", len(raw)), raw, hashlib.sha256(raw).digest(), payload]
                atomic_write_bytes(path, entry, new_file_mode=0o600)
                for old in superseded:
                    _unlink(old)
                evict(self.root, self.limit, keep=path)
        except Exception as e:  # a full disk, a read-only folder, a lock timeout: not fatal
            why = getattr(e, "strerror", None) or str(e) or type(e).__name__
            self._warn_once(f"prompt cache: could not save an evaluated prompt in {self.root} ({why})")
            return None
        self.saved += 1
        if self.report is not None:
            self.report(f"prompt cache: saved {len(tokens)} tokens ({_mib(total)} MiB)")
        return path

    # engine hooks ---------------------------------------------------------------------------

    def restore_single(self, cache: "KVCache", prompt: Sequence[int], kept: int) -> int:
        """KVCache.prepare: when a saved prefix gives ``prompt`` more than the ``kept`` tokens
        sequence 0 holds, load it there (the context's only sequence: emptied first, so its
        cells take the places they had when evaluated) and return its length, else ``kept``."""
        self.restored = 0
        if len(prompt) - 1 - kept < MIN_TOKENS:  # no saved prefix could give enough more
            return kept
        try:
            entry, n = self.best(cache.ctx, prompt, len(prompt) - 1, cache.ctx.n_ctx)
            if entry is None or n < max(MIN_TOKENS, kept + MIN_TOKENS):
                return kept
            cache.ctx.clear()
            cache.tokens = []
            if not self.load_into(cache.ctx, 0, entry, n):
                return 0
        except Exception as e:  # never worse than no cache
            self._warn_once(f"prompt cache: not used ({e})")
            cache.ctx.clear()
            cache.tokens = []
            return 0
        cache.tokens = list(prompt[:n])
        return n

    def save_single(self, cache: "KVCache") -> None:
        """After an answer: save what sequence 0 holds (cells of a last unconfirmed speculation
        draft, past ``cache.tokens``, are dropped first, as the generation would)."""
        cache.ctx.remove(0, len(cache.tokens), -1)
        self.save(cache.ctx, 0, cache.tokens)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f}"


def evict(root: Path, limit: int, *, keep: Path | None = None) -> int:
    """Remove the least recently used entries (all models) until the folder holds at most
    ``limit`` bytes; the caller holds the lock. Returns how many were removed."""
    files = []
    for p in _entries(root):
        try:
            st = p.stat()
        except OSError:
            continue
        files.append((st.st_mtime, st.st_size, p))
    total = sum(s for _, s, _ in files)
    removed = 0
    for _, size, p in sorted(files, key=lambda f: f[0]):
        if total <= limit:
            break
        if p == keep:
            continue
        _unlink(p)
        total -= size
        removed += 1
    return removed


# wiring -----------------------------------------------------------------------------------

def attach(model: "Model", *, warn: Callable[[str], None] | None = None) -> PromptCache | None:
    """Give a model the disk cache (its chat context now, the parallel decoder when made):
    None when CHATGLM3_PROMPT_CACHE=0 or the file cannot be identified."""
    if not enabled():
        return None
    try:
        pc = PromptCache(model.path, warn=warn, model_name=model.name)
    except OSError:
        return None
    model.prompt_cache = pc  # type: ignore[attr-defined]
    if model._kv is not None:
        model._kv.disk = pc
    return pc


def of(model: Any) -> PromptCache | None:
    return getattr(model, "prompt_cache", None)


def decoder_restore(dec: "ParallelDecoder", prompt: Sequence[int], limit: int, source: int,
                    shared: int, live: int) -> tuple[int, int]:
    """ParallelDecoder._start: when a saved prefix gives more than the kept one (``source``,
    ``shared``), load it into a new kept prefix of the decoder and return (its sequence, its
    length); else (source, shared)."""
    pc = of(dec.model)
    if pc is None or limit - shared < MIN_TOKENS:
        return source, shared
    try:
        entry, n = pc.best(dec.ctx, prompt, limit, dec.n_ctx)
        if entry is None or n < max(MIN_TOKENS, shared + MIN_TOKENS):
            return source, shared
        seq = dec.prefixes.reserve(prompt[:n], dec._prefix_budget(live))
        if seq is None:
            return source, shared
        if not pc.load_into(dec.ctx, seq, entry, n):
            dec.prefixes.drop(seq)
            return source, shared
    except Exception as e:
        pc._warn_once(f"prompt cache: not used ({e})")
        return source, shared
    return seq, n


def decoder_kept(dec: "ParallelDecoder", seq: int, tokens: Sequence[int]) -> None:
    """ParallelDecoder._keep: a prefix kept in the KV cache is saved too (a job's instructions,
    a server's finished conversation), so that the next run or a restarted server has it."""
    pc = of(dec.model)
    if pc is not None:
        pc.save(dec.ctx, seq, tokens)
