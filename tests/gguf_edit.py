"""A copy of a GGUF fixture with some metadata values replaced: hostile model files for tests."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def copy_with(src: Path, out: Path, values: dict[str, tuple[Any, Any]], drop: tuple[str, ...] = ()) -> Path:
    """``src`` written to ``out`` with ``values`` = {key or ".suffix": (value, GGUFValueType)}
    replacing (or adding) metadata (a key starting with "." matches any key ending with it),
    and the keys in ``drop`` left out."""
    import gguf

    reader = gguf.GGUFReader(str(src))
    writer = gguf.GGUFWriter(str(out), str(reader.fields["general.architecture"].contents()))
    pending = dict(values)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture" or field.name in drop:
            continue
        key = next((k for k in values if k == field.name or (k.startswith(".") and field.name.endswith(k))), None)
        if key is not None:
            value, vtype = values[key]
            writer.add_key_value(field.name, value, vtype)
            pending.pop(key, None)
        elif field.types[0] == gguf.GGUFValueType.ARRAY:
            writer.add_array(field.name, field.contents())
        else:
            writer.add_key_value(field.name, field.contents(), field.types[0])
    for key, (value, vtype) in pending.items():
        if not key.startswith("."):
            writer.add_key_value(key, value, vtype)
    for t in reader.tensors:
        writer.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
