"""Models from the Hugging Face Hub and ModelScope: names and aliases (registry), the two sites'
APIs (http, modelscope), resumable verified downloads into the shared HF cache or ModelScope's
own (download), what is on disk (store), and the one resolver every command uses (resolve).
No Typer or rich here: progress goes through `chatglm3_cli.progress.DownloadProgress`."""
from __future__ import annotations


def human_size(n: float) -> str:
    """4140000000 -> '4.14 GB' (decimal units, as the Hub shows sizes)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"
