"""Which epoch's weights to keep, and when to stop: the state that lives across epochs."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class EarlyStopping:
    """The best epoch so far by validation AUC (or its trailing mean), and the patience count.

    Higher AUC wins; an equal AUC (common on small validation sets) is broken by lower validation
    loss. With ``window`` > 1 the AUC compared is the mean of the last ``window`` epochs' AUCs.
    Its :meth:`state_dict` is what a checkpoint stores under ``loop``.

    Args:
        patience: epochs without improvement before stopping (None: never stop early).
        window: epochs in the trailing mean (``training.selection_window``).
    """

    patience: int | None = None
    window: int = 1
    best_auc: float | None = None
    best_loss: float | None = None
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    stopped_early: bool = False
    recent_aucs: list[float] = field(default_factory=list)

    def update(self, auc: float, loss: float, epoch: int) -> tuple[bool, float]:
        """Record an epoch's validation AUC and loss.

        Returns:
            Whether this epoch's weights are the best so far, and the AUC compared (the trailing
            mean with ``window`` > 1; NaN while an AUC in the window is undefined).
        """
        if self.window > 1:
            self.recent_aucs = [*self.recent_aucs, auc][-self.window:]
            auc = float(np.mean(self.recent_aucs)) if all(math.isfinite(v) for v in self.recent_aucs) else math.nan
        best_auc = -math.inf if self.best_auc is None else self.best_auc
        best_loss = math.inf if self.best_loss is None else self.best_loss
        auc_value = auc if math.isfinite(auc) else -math.inf
        improved = self.best_epoch == 0 or auc_value > best_auc or (auc_value == best_auc and loss < best_loss)
        if improved:
            self.best_auc = auc_value if math.isfinite(auc_value) else None
            self.best_loss = loss
            self.best_epoch = epoch
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
            if self.patience is not None and self.epochs_without_improvement >= self.patience:
                self.stopped_early = True
        return improved, auc

    def state_dict(self) -> dict[str, Any]:
        """The state a checkpoint keeps (the settings come from the config)."""
        state = asdict(self)
        del state["patience"], state["window"]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's state (older checkpoints have no ``recent_aucs``)."""
        self.best_auc = state["best_auc"]
        self.best_loss = state["best_loss"]
        self.best_epoch = int(state["best_epoch"])
        self.epochs_without_improvement = int(state["epochs_without_improvement"])
        self.stopped_early = bool(state["stopped_early"])
        self.recent_aucs = list(state.get("recent_aucs", []))
