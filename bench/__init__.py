"""The fan-out benchmark: the same batches against the local Cloud Run emulator, naive loop vs the
controller (per item and packed) vs the emulator alone. Run it with ``python -m bench`` (see
docs/benchmarks.md)."""
