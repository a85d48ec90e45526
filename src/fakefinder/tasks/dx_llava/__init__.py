"""DX-LLaVA: an explainable deepfake detector (LLaVA + ConvNeXt/CLIP vision tower + binary head).

Build, train (stage 1 projector, stage 2 full / LoRA / QLoRA), save, merge and run it; the heavy
imports (transformers, peft, bitsandbytes) happen only when these functions are used.
"""

from fakefinder.tasks.dx_llava.config import DxLlavaConfig
from fakefinder.tasks.registry import Task

TASK = Task("dx_llava", "fakefinder.tasks.dx_llava.task", "DX-LLaVA: a vision-language detector that explains its answer",
            section="dx_llava", section_model=DxLlavaConfig)
