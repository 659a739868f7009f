"""Training loops, losses, optimisers, checkpoints and tracking."""

from trainers._classify import evaluate, finetune, load_classifier, supervised
from trainers._cluster import METHODS, cluster_accuracy, cluster_eval
from trainers._config import DataConfig, ModelConfig, OptimConfig, PretrainConfig, TrackConfig
from trainers._eval import EvalError, check_inputs, knn_eval, labelled_pair, linear_eval, load_encoder
from trainers._graphs import GraphedStep, graphs_problem
from trainers._knn import ANCHOR_K, extract_features, knn_accuracy, knn_predict
from trainers._knn import VOTES as KNN_VOTES
from trainers._linear import fit_linear_probe
from trainers._lock import RunDirError
from trainers._loss import GatherLayer, chance_loss, nt_xent
from trainers._optim import LR_SCALING, OPTIMIZERS, SCHEDULES, create_optimizer, create_scheduler, scaled_lr
from trainers._pretrain import (
    ACCELERATE_PRECISION,
    COMPILE_MODES,
    INPUT_DTYPE,
    TrainError,
    build_step,
    build_training,
    export_encoder,
    import_encoder,
    pretrain,
    train_step,
)
from trainers._tracking import changed_keys, flatten

__all__ = [
    "ACCELERATE_PRECISION",
    "ANCHOR_K",
    "COMPILE_MODES",
    "GraphedStep",
    "KNN_VOTES",
    "INPUT_DTYPE",
    "METHODS",
    "LR_SCALING",
    "OPTIMIZERS",
    "SCHEDULES",
    "DataConfig",
    "EvalError",
    "GatherLayer",
    "ModelConfig",
    "OptimConfig",
    "PretrainConfig",
    "TrackConfig",
    "RunDirError",
    "TrainError",
    "chance_loss",
    "check_inputs",
    "cluster_accuracy",
    "cluster_eval",
    "build_training",
    "changed_keys",
    "create_optimizer",
    "create_scheduler",
    "export_encoder",
    "import_encoder",
    "evaluate",
    "extract_features",
    "finetune",
    "fit_linear_probe",
    "flatten",
    "build_step",
    "graphs_problem",
    "knn_accuracy",
    "knn_eval",
    "labelled_pair",
    "linear_eval",
    "load_classifier",
    "load_encoder",
    "knn_predict",
    "nt_xent",
    "pretrain",
    "scaled_lr",
    "supervised",
    "train_step",
]
