"""Pictures of one evaluation, as PNG bytes: what the tasks' `figures()` draw.

matplotlib (Agg, no display) and scikit-learn are imported only when a picture is drawn. Figures
are made as `matplotlib.figure.Figure` objects, not through pyplot's figure manager, so nothing
stays open in the training process after a picture is written.
"""

from __future__ import annotations

import io
from typing import Any

DPI = 100
_VALUES_UP_TO = 20  # classes; past this the confusion matrix's cells carry no numbers


def _figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def png(figure: Any) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def confusion_matrix_display(
    gold: Any, predicted: Any, label_names: list[str], title: str = "confusion matrix"
) -> Any:
    """scikit-learn's ConfusionMatrixDisplay of class ids, drawn: rows gold, columns predicted,
    every class of `label_names` on both axes (also one absent from this split)."""
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    n = len(label_names)
    side = min(max(4.0, 0.45 * n + 2.0), 16.0)
    figure = _figure(side, side)
    ax = figure.add_subplot()
    display = ConfusionMatrixDisplay.from_predictions(
        np.asarray(gold).reshape(-1),
        np.asarray(predicted).reshape(-1),
        labels=list(range(n)),
        display_labels=label_names,
        ax=ax,
        colorbar=False,
        include_values=n <= _VALUES_UP_TO,
        xticks_rotation="vertical" if n > 4 else "horizontal",
    )
    ax.set_title(title, fontsize="medium")
    return display


def scatter(predicted: Any, gold: Any, title: str = "predicted vs gold") -> Any:
    """Predicted against gold scores, with the line y = x (a perfect prediction)."""
    import numpy as np

    pred = np.asarray(predicted, dtype=float).reshape(-1)
    true = np.asarray(gold, dtype=float).reshape(-1)
    figure = _figure(4.5, 4.5)
    ax = figure.add_subplot()
    ax.scatter(true, pred, s=8, alpha=0.5, linewidths=0)
    if true.size:
        low = float(min(true.min(), pred.min()))
        high = float(max(true.max(), pred.max()))
        ax.plot([low, high], [low, high], color="tab:red", linewidth=1, label="y = x")
        ax.legend(loc="upper left")
    ax.set_xlabel("gold")
    ax.set_ylabel("predicted")
    ax.set_title(title, fontsize="medium")
    return figure


def bars(label_names: list[str], values: list[float], title: str) -> Any:
    """One horizontal bar per label (the first at the top), values from 0 to 1."""
    figure = _figure(5.0, min(max(2.0, 0.25 * len(label_names) + 1.0), 20.0))
    ax = figure.add_subplot()
    ax.barh(range(len(values)), values)
    ax.set_yticks(range(len(label_names)), label_names)
    ax.invert_yaxis()
    ax.set_xlim(0.0, 1.0)
    ax.set_title(title, fontsize="medium")
    return figure
