"""`text_to_image_lora`: a LoRA adapter for a Stable Diffusion 1.x / 2.x UNet (diffusers + peft),
trained on a folder of captioned images, sampled at fixed prompts while it trains; it generates
extra synthetic fakes for detector training."""

from fakefinder.tasks.text_to_image_lora.config import PROMPT_EXTENSIONS, DiffusionConfig
from fakefinder.tasks.registry import Task

TASK = Task("text_to_image_lora", "fakefinder.tasks.text_to_image_lora.kind", "LoRA for a Stable Diffusion UNet (diffusers)",
            section="diffusion", section_model=DiffusionConfig,
            short_form={"base_model": "diffusion.model.base", "dataset_path": "diffusion.data.path",
                        "epochs": "diffusion.train.epochs", "batch_size": "diffusion.train.batch_size",
                        "learning_rate": "diffusion.train.lr", "image_size": "diffusion.data.resolution"},
            output_key="diffusion.train.output_dir",
            option_sections=("diffusion.train", "diffusion.lora", "diffusion.data", "diffusion.model",
                             "diffusion.sample", "diffusion.eval", "diffusion"),
            adapter="adapter", predict_inputs=PROMPT_EXTENSIONS)
