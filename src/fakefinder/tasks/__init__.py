"""The model kinds fakefinder trains and serves: one `register(...)` line per kind (see
`fakefinder.tasks.registry` for what a kind provides)."""

from fakefinder.tasks import classify, deepfake, detect, diffusion, dx_llava, llm_lora
from fakefinder.tasks.registry import (
    Task, UnknownTaskError, get_task, list_tasks, model_paths, read_model, register, task_for_config, task_for_models,
)

register(deepfake.TASK)
register(classify.TASK)
register(dx_llava.TASK)
register(llm_lora.LORA)
register(llm_lora.QLORA)
register(detect.TASK)
register(diffusion.TASK)

__all__ = ["Task", "UnknownTaskError", "get_task", "list_tasks", "model_paths", "read_model", "register", "task_for_config",
           "task_for_models"]
