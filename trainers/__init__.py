"""Training loops, losses, optimisers, checkpoints and tracking; and the evaluations.

Names load on first use (PEP 562), so `from fastclr.trainers import PretrainConfig` reads a
dataclass without importing torch, and `fastclr <command> --help` answers at once.

Evaluations: each command is a function of its settings object, which it checks first
(`fastclr.config.check_settings`); each returns what it writes to `<out>/results.json`.

    from fastclr.trainers import LinearConfig, linear
    result = linear(LinearConfig(encoder="runs/pretrain", train="shards/train", val="shards/val",
                                 out="runs/linear", label_fraction=0.1))
    print(result["top1"])

- `linear(LinearConfig)`: a probe (`linear` or `mlp2` head) of a frozen encoder, full batch on cached
  features, or (mode `augmented`) trained on augmented views as `finetune` with mode `head`.
- `knn(KnnConfig)`: weighted or majority kNN top-1. `cluster(ClusterConfig)`: k-means / GMM on
  pixels or features, Hungarian-matched.
- `finetune(FinetuneConfig)`, `supervised(SupervisedConfig)`: classifiers trained end to end through
  one loop, saved as model.safetensors + model.json; `evaluate(EvaluateConfig)` measures one again,
  `load_classifier(folder)` rebuilds it.
- `import_encoder(ImportWeightsConfig)`: an encoder folder from a local torchvision / timm file;
  `load_encoder(path)` reads any encoder folder (frozen, eval mode, its encoder.json checked whole:
  `EncoderInfo` is its schema, and its hashes cover the weights and the description);
  `read_encoder_info(path)` checks an encoder.json alone, without torch.
- Each holds its `out` throughout, as pretrain holds its run_dir: `output_folder(out, command)` refuses a
  folder in use by another run, a shard folder or another command's output (`RunDirError`).
- Using an encoder elsewhere (docs/encoder.md): `load_encoder(path)` gives a plain torch module and
  encoder.json, `preprocessing(info)` the transform of a PIL image into its input (`normalisation`,
  `timm_data_config`: the same as numbers, as timm names them); `export_timm(ExportTimmConfig)`
  writes a folder `timm.create_model("local-dir:DIR", pretrained=True)` loads.
- Input checks (before any work): `check_inputs`, and the messages' pieces `same_classes`,
  `class_difference`, `same_channels`.
- Pieces: `extract_features` (L2-normalised, gathered over ranks), `knn_predict`, `knn_accuracy`,
  `cluster_accuracy`, `fit_linear_probe` + `probe_accuracy`, `labelled_pair` (an encoder's features
  of a train and a val folder); the classifier loop `fit_classifier` with
  `create_classifier_optimizer` (CLASSIFIER_OPTIMIZERS) and `create_classifier_schedule`.
"""

import importlib

# public name -> the module defining it ("module:name" where the module calls it otherwise)
_PUBLIC = {
    "evaluate": "_classify",
    "finetune": "_classify",
    "supervised": "_classify",
    "load_classifier": "_classifier_file",
    "cluster": "_cluster",
    "cluster_accuracy": "_cluster",
    "DataConfig": "_config",
    "ModelConfig": "_config",
    "OptimConfig": "_config",
    "PretrainConfig": "_config",
    "TrackConfig": "_config",
    "export_encoder": "_encoder_file",
    "export_checkpoint_encoder": "_encoder_file",
    "import_encoder": "_encoder_file",
    "load_encoder": "_encoder_file",
    "EncoderInfo": "_encoder_info",
    "read_encoder_info": "_encoder_info",
    "EvalError": "_errors",
    "check_inputs": "_eval_io",
    "class_difference": "_eval_io",
    "same_channels": "_eval_io",
    "same_classes": "_eval_io",
    "CIFAR_STEM_STEPS": "_export",
    "export_timm": "_export",
    "normalisation": "_export",
    "preprocessing": "_export",
    "timm_data_config": "_export",
    "TrainError": "_errors",
    "knn": "_eval",
    "labelled_pair": "_eval",
    "linear": "_eval",
    "CLASSIFIER_HEADS": "_eval_config:HEADS",
    "CLASSIFIER_OPTIMIZERS": "_eval_config",
    "CLUSTER_METHODS": "_eval_config",
    "ClusterConfig": "_eval_config",
    "EvaluateConfig": "_eval_config",
    "ExportTimmConfig": "_eval_config",
    "FinetuneConfig": "_eval_config",
    "ImportWeightsConfig": "_eval_config",
    "KNN_VOTES": "_eval_config",
    "KnnConfig": "_eval_config",
    "LinearConfig": "_eval_config",
    "SupervisedConfig": "_eval_config",
    "create_classifier_optimizer": "_fit",
    "create_classifier_schedule": "_fit",
    "fit_classifier": "_fit",
    "CPU_GRAPHS": "_graphs",
    "GraphedStep": "_graphs",
    "graphs_problem": "_graphs",
    "ANCHOR_K": "_knn",
    "extract_features": "_knn",
    "knn_accuracy": "_knn",
    "knn_predict": "_knn",
    "fit_linear_probe": "_linear",
    "probe_accuracy": "_linear",
    "RunDirError": "_lock",
    "output_folder": "_lock",
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
