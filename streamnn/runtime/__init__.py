"""The stream runtime: sources, decoding, sinks, the consumer loop, checkpoints, CLI and reports.

`streamnn run pipelines/<name>.toml` builds a `Pipeline` from a config file and runs it; the
pieces are small contracts that can also be assembled in Python (see docs/runtime.md).
"""
