"""The model kinds fakefinder trains and serves: one `register(...)` line per kind (see
`fakefinder.tasks.registry` for what a kind provides)."""

from fakefinder.tasks import (
    deepfake_detector, dx_llava, image_classifier, llm_lora, object_detector, text_to_image_lora,
)
from fakefinder.tasks.registry import (
    Task, UnknownTaskError, get_task, list_tasks, model_paths, read_model, register, task_for_config, task_for_models,
)

register(deepfake_detector.TASK)
register(image_classifier.TASK)
register(dx_llava.TASK)
register(llm_lora.LORA)
register(llm_lora.QLORA)
register(object_detector.TASK)
register(text_to_image_lora.TASK)

__all__ = ["Task", "UnknownTaskError", "get_task", "list_tasks", "model_paths", "read_model", "register", "task_for_config",
           "task_for_models"]
