"""The pipeline as named steps: `run_flow(cfg, start=..., stop=...)` over the table in `steps.py`."""

from .options import Options, Step
from .runner import FlowResult, run_flow, step_names
from .steps import STEPS

__all__ = ["STEPS", "FlowResult", "Options", "Step", "run_flow", "step_names"]
