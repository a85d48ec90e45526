"""DX-LLaVA: an explainable deepfake detector (LLaVA + ConvNeXt/CLIP vision tower + binary head).

Build, train (stage 1 projector, stage 2 full / LoRA / QLoRA), save, merge and run it; the heavy
imports (transformers, peft, bitsandbytes) happen only when these functions are used.
"""

from fakefinder.tasks.dx_llava.config import DxLlavaConfig
from fakefinder.tasks.registry import Task

TASK = Task("dx_llava", "fakefinder.tasks.dx_llava.kind", "DX-LLaVA: a vision-language detector that explains its answer",
            section="dx_llava", section_model=DxLlavaConfig,
            short_form={"base_model": "dx_llava.model.language_model", "dataset_path": "dx_llava.data.train_json",
                        "epochs": "dx_llava.train.epochs", "batch_size": "dx_llava.train.batch_size",
                        "learning_rate": "dx_llava.train.lr"},
            output_key="dx_llava.train.output_dir",
            option_sections=("dx_llava.train", "dx_llava.model", "dx_llava.data", "dx_llava"), adapter="adapter")
