"""Finetuning a HookedTransformer (adapters, checkpoints, preventative steering) and the shift it
causes along a persona vector."""
