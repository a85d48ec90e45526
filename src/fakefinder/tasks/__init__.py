"""The model kinds fakefinder trains and serves: one `register(...)` line per kind (see
`fakefinder.tasks.base.Kind` for what a kind provides, `fakefinder.tasks.registry` for plugins).
The order of the lines is the order in which kinds are asked to describe a dataset folder."""

from fakefinder.tasks import (
    deepfake_detector,
    dx_llava,
    image_classifier,
    llm_lora,
    object_detector,
    text_to_image_lora,
)
from fakefinder.tasks.base import EvalSummary, Kind, Predictor, PredictResult, TrainSummary
from fakefinder.tasks.registry import (
    UnknownTaskError,
    get_task,
    kinds,
    list_tasks,
    load_plugins,
    model_paths,
    read_model,
    register,
    task_for_config,
    task_for_models,
    unregister,
)

register(deepfake_detector.TASK)
register(dx_llava.TASK)
register(llm_lora.LORA)
register(llm_lora.QLORA)
register(object_detector.TASK)
register(text_to_image_lora.TASK)
register(image_classifier.TASK)
load_plugins()

__all__ = [
    "EvalSummary",
    "Kind",
    "PredictResult",
    "Predictor",
    "TrainSummary",
    "UnknownTaskError",
    "get_task",
    "kinds",
    "list_tasks",
    "model_paths",
    "read_model",
    "register",
    "task_for_config",
    "task_for_models",
    "unregister",
]
