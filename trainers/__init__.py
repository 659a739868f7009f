"""Training loops, losses, optimisers, checkpoints and tracking.

Names load on first use (PEP 562), so `from fastclr.trainers import PretrainConfig` reads a
dataclass without importing torch, and `fastclr <command> --help` answers at once.
"""

import importlib

# public name -> the module defining it ("module:name" where the module calls it otherwise)
_PUBLIC = {
    "evaluate": "_classify",
    "finetune": "_classify",
    "load_classifier": "_classify",
    "supervised": "_classify",
    "METHODS": "_cluster",
    "cluster_accuracy": "_cluster",
    "cluster_eval": "_cluster",
    "DataConfig": "_config",
    "ModelConfig": "_config",
    "OptimConfig": "_config",
    "PretrainConfig": "_config",
    "TrackConfig": "_config",
    "export_encoder": "_encoder_file",
    "export_checkpoint_encoder": "_encoder_file",
    "import_encoder": "_encoder_file",
    "load_encoder": "_encoder_file",
    "EvalError": "_errors",
    "TrainError": "_errors",
    "check_inputs": "_eval",
    "knn_eval": "_eval",
    "labelled_pair": "_eval",
    "linear_eval": "_eval",
    "GraphedStep": "_graphs",
    "graphs_problem": "_graphs",
    "ANCHOR_K": "_knn",
    "extract_features": "_knn",
    "knn_accuracy": "_knn",
    "knn_predict": "_knn",
    "KNN_VOTES": "_knn:VOTES",
    "fit_linear_probe": "_linear",
    "RunDirError": "_lock",
    "GatherLayer": "_loss",
    "chance_loss": "_loss",
    "nt_xent": "_loss",
    "LR_SCALING": "_optim",
    "OPTIMIZERS": "_optim",
    "SCHEDULES": "_optim",
    "create_optimizer": "_optim",
    "create_scheduler": "_optim",
    "scaled_lr": "_optim",
    "COMPILE_MODES": "_setup",
    "INPUT_DTYPE": "_setup",
    "Run": "_setup",
    "build_model": "_setup",
    "build_run": "_setup",
    "build_training": "_setup",
    "build_step": "_loop",
    "pretrain": "_pretrain",
    "train_step": "_loop",
    "LOSSES": "_losses",
    "create_loss": "_losses",
    "NTXent": "_loss",
    "new_accelerator": "_tracking",
    "read_metrics": "_tracking",
    "changed_keys": "_resume",
    "flatten": "_resume",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, _, attribute = _PUBLIC[name].partition(":")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attribute or name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return __all__
