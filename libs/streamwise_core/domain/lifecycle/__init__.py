"""Model lifecycle: the validation gate, promotion and rollback, lineage and audit."""

from .gate import HELD_BACK, SERVED, GateDecision, GateSettings, decide

__all__ = ["HELD_BACK", "SERVED", "GateDecision", "GateSettings", "decide"]
