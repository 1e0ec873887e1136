"""How each paper table is laid out, and how a suite's row label places a run in it.

A run is placed by its `row` tag (the suite row's label). The label names the table cell's
coordinates, joined by " | " in the order of the layout's `label_parts`, e.g. in Table 1
"R-50-FPN | non-voc -> voc | Mask R-CNN (Baseline)". Labels are matched to the paper's
rows case- and space-insensitively. Labels rather than config params carry the placement
because the `mini` profile rewrites the params (backbone, dataset) but never the label.
"""

from __future__ import annotations

from dataclasses import dataclass

LABEL_SEPARATOR = " | "

#: Paper column name -> MLflow metric name (percent). "IoU@GT" is ours, not the paper's: the mean
#: mask IoU on the ground-truth boxes (masks without detection errors; shapeprop.eval.gt_boxes).
METRICS = {
    "AP": "segm_AP",
    "AP50": "segm_AP50",
    "AP75": "segm_AP75",
    "APs": "segm_APs",
    "APm": "segm_APm",
    "APl": "segm_APl",
    "IoU@GT": "gtbox_mask_iou",
}
AP_ALL = ("AP", "AP50", "AP75", "APs", "APm", "APl", "IoU@GT")
AP_MAIN = ("AP", "AP50", "AP75", "IoU@GT")


@dataclass(frozen=True)
class TableLayout:
    """One paper table: its rows are (section, row), its columns (column_group, metric)."""

    name: str
    caption: str
    label_parts: tuple[str, ...]
    section_title: str
    row_title: str
    metrics: tuple[str, ...]

    def place(self, label: str) -> dict[str, str] | None:
        """The cell coordinates {section, column_group, row} a row label names, or None if malformed."""
        parts = [part.strip() for part in label.split(LABEL_SEPARATOR.strip())]
        if len(parts) != len(self.label_parts) or not all(parts):
            return None
        placed = {"section": "", "column_group": "", "row": ""}
        placed.update(zip(self.label_parts, parts, strict=True))
        return placed

    def label_hint(self) -> str:
        return LABEL_SEPARATOR.join(f"<{part}>" for part in self.label_parts)


TABLES: dict[str, TableLayout] = {
    layout.name: layout
    for layout in (
        TableLayout(
            name="table1",
            caption="COCO category-wise semi-supervision (class-agnostic masks): train on the masks of one "
            "class group, test on the other. Mask AP; IoU@GT (ours, not the paper's): mean mask IoU on the GT boxes.",
            label_parts=("section", "column_group", "row"),
            section_title="Backbone",
            row_title="Method",
            metrics=AP_ALL,
        ),
        TableLayout(
            name="table2",
            caption="BDD100K image-wise semi-supervision. Mask AP; IoU@GT (ours, not the paper's): mean mask IoU on the GT boxes.",
            label_parts=("section", "row"),
            section_title="Training data (# annotations)",
            row_title="Method",
            metrics=AP_ALL,
        ),
        TableLayout(
            name="table3",
            caption="Fully supervised setting. Mask AP; IoU@GT (ours, not the paper's): mean mask IoU on the GT boxes.",
            label_parts=("section", "row"),
            section_title="Dataset",
            row_title="Method",
            metrics=AP_MAIN,
        ),
        TableLayout(
            name="table4",
            caption="Ablations of the model design on BDD100K. Mask AP; IoU@GT (ours, not the paper's): mean mask IoU on the GT boxes.",
            label_parts=("row",),
            section_title="",
            row_title="Setting",
            metrics=AP_MAIN,
        ),
    )
}


def normalize(text: str) -> str:
    """Matching key for labels: case- and whitespace-insensitive."""
    return " ".join(text.split()).casefold()
