"""Past one machine: batch and translate on a Ray cluster (``--ray``).

- ``cluster``: importing Ray (an optional extra), connecting to a cluster or starting a local one;
- ``workers``: what runs on each worker: the model found and checked (sha256) on its node, held
  by one Ray Data actor with a ParallelDecoder, answering batch records or decode requests;
- ``driver``: the Ray Data job (``map_batches`` with a callable class, one actor per worker
  slot); each key answered exactly once, a record that keeps killing its worker answered as lost;
- ``batch`` / ``translate``: the two commands' hooks; resume, manifest, output, prompts, stops
  and retries stay in ``batch/runner.py`` and ``translate/pipeline.py``.

Nothing outside this package imports Ray, and this package imports it only when a job runs.
"""
