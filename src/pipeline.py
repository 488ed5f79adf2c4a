"""The heavy half of training: ms-swift's own `SwiftSft`, fed with the project's rows.

Imported only after the config and data are valid (it pulls in torch and transformers).
"""

from __future__ import annotations

from typing import Any

from swift import SftArguments
from swift.pipelines.train.sft import SwiftSft

from datasets import Dataset as HfDataset


class GroundingSft(SwiftSft):
    """`SwiftSft` whose datasets are the rows our builders made, instead of ms-swift's own loaders.

    Everything else (model, template, tuner, trainer, saving) is ms-swift's unchanged.
    """

    def __init__(self, args: SftArguments, train_rows: list[dict[str, Any]], val_rows: list[dict[str, Any]]):
        self._rows = (train_rows, val_rows)
        super().__init__(args)

    def _get_dataset(self):
        train_rows, val_rows = self._rows
        return HfDataset.from_list(train_rows), (HfDataset.from_list(val_rows) if val_rows else None)


def run_training(sft_kwargs: dict[str, Any], train_rows: list[dict[str, Any]],
                 val_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Build `SftArguments(**sft_kwargs)` and train; return ms-swift's result dict
    (`last_model_checkpoint`, `best_model_checkpoint`, `global_step`, `log_history`, ...)."""
    args = SftArguments(**sft_kwargs)
    return GroundingSft(args, train_rows, val_rows).main()
