"""Optional Weights & Biases logging: the study config, one row per trained model, the attack table.

Works offline (WANDB_MODE=offline writes ./wandb/ and syncs later with `wandb sync`).
"""
from __future__ import annotations

from pathlib import Path

from utils.errors import UsageError


class WandbLogger:
    def __init__(self, args, configs):
        try:
            import wandb
        except ImportError:
            raise UsageError("--wandb needs the wandb package: pip install wandb (or drop --wandb)") from None
        self.wandb = wandb
        study = {k: v for k, v in vars(args).items() if not k.startswith("_")}
        Path(args.results_dir).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=args.wandb_project, entity=args.wandb_entity, tags=list(args.wandb_tags),
                              config={"study": study, "configurations": [c.name for c in configs]},
                              dir=args.results_dir, reinit=True)

    def log_training(self, rows: list[dict]) -> None:
        """Per-epoch history of every model, then one table of final metrics (rows: artifacts/rundir.py: model_record)."""
        for r in rows:
            for h in r.get("history", []):
                self.wandb.log({f"{r['experiment']}/model_{r['model_index']}/{k}": v for k, v in h.items()})
        cols = ["experiment", "method", "sparsity", "model_index", "train_acc", "test_acc", "wall_time_s"]
        self.run.log({"training": self.wandb.Table(columns=cols, data=[[r.get(c) for c in cols] for r in rows])})

    def log_attacks(self, df) -> None:
        self.run.log({"attacks": self.wandb.Table(dataframe=df)})

    def finish(self) -> None:
        self.run.finish()
