"""fpgaprune: prune near-zero 2-D conv kernels, retrain them locked at 0.0, export to FPGA HLS."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
