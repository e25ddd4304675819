"""Batch jobs: JSONL task records or OpenAI Batch lines in, one result line per record out.

jobs.py reads and validates the input, tasks.py turns each task into a prompt (and a grammar
for classify / extract) and reads the answer back, results.py keeps the results file and its
manifest consistent across runs, runner.py runs a job on the parallel decoder. No Typer or
rich here: the command is chatglm3_cli/cli/batch.py.
"""
