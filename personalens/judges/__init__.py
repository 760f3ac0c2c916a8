"""Judges score a reply for a trait and for coherence: the offline judge and any OpenAI-compatible LLM judge."""

from personalens.judges.factory import make_judge

__all__ = ["make_judge"]
