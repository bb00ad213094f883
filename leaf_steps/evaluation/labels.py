"""How the evaluation names things in tables and figures: method display names, MOS-ratio labels,
the PLCC column's note."""

from __future__ import annotations

DISPLAY = {
    "teacher_zero_shot": "Teacher (zero-shot)",
    "teacher_linear": "Teacher + linear calibration",
    "cft_only": "CFT-only (student on MOS subset alone)",
}
TABLE_PLCC = "plcc"  # the table's PLCC columns: raw Pearson correlation (summary.parquet also has plcc_logistic)
PLCC_NOTE = (
    "PLCC is the raw Pearson correlation of the predictions with MOS (no fitted mapping); "
    "`summary.parquet` has it as `plcc_*` beside `plcc_logistic_*`, the PLCC after the VQEG 4-parameter "
    "logistic fit."
)


def ratio_label(r: float) -> str:
    return "label-free" if r == 0 else f"{r * 100:g}% MOS"
