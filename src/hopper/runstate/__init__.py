"""Run state: what a run keeps in its --state location, so that runs are single-flight,
recorded, resumable, retryable and incremental. From the bottom up:

- store: an S3 prefix or a local folder, with conditional writes and logs of lines;
- record: the layout, the run record (ledger, checkpoint, summary) and its readers;
- lease: one run at a time per state location;
- incremental: what changed since it was last sent;
- run: the run with state, around the engine's run.
"""
