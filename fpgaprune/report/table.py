"""Terminal tables: one library (tabulate) and one style for every command's output.

    print(table([["conv2", 1024, 1004]], ["layer", "kernels", "pruned"]))

Numbers right-align with thousands separators; None prints as an empty cell; a row that is
`SEPARATOR` draws a rule (before a totals row).
"""

from __future__ import annotations

from tabulate import SEPARATING_LINE, tabulate

SEPARATOR = SEPARATING_LINE


def table(rows, headers, floatfmt: str = "g", **options) -> str:
    return tabulate(rows, headers=headers, tablefmt="simple", intfmt=",", floatfmt=floatfmt, missingval="",
                    **options)
